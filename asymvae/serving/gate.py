"""The deploy gate: a new export replaces the one being served only when it scores better on the same held-out
evaluation.

`decide` is pure: the new export's evaluation (asymvae.export.evaluation), what serves now (`Serving`, or
None when no InferenceService of that name exists: a first deploy) and the settings give a `Verdict`. The
score is the asymmetric decoder's masked `pre_error` (lower is better). A first deploy must beat the baseline
VAE: its ratio to the baseline's pre_error below `first_deploy_max_ratio`. A later one must be lower than the
serving export's by at least `min_improvement` (relative), on an evaluation with the same identity; a
different evaluation, or a serving export without a readable evaluation.json, is not comparable, and the new
export is not deployed (`gate=off` deploys without comparing). `check_gate` gathers the inputs: the
InferenceService from the Kubernetes API, its storage URI, and that export's evaluation.json from the
object store with the step's own S3 settings (only `s3://` locations are read: the credentials go nowhere
else).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from asymvae.errors import UserError
from asymvae.export.evaluation import EVALUATION_NAME, METRIC, Evaluation, parse_evaluation
from asymvae.serving.inferenceservice import read_inferenceservice, storage_uri
from asymvae.storage.factory import is_s3_uri, open_store

log = logging.getLogger(__name__)

GATES = ("on", "off")
_OVERRIDE = "To deploy it anyway, run with the gate off (gate=off; pipeline parameter deploy_gate=off)."


class GateError(UserError, ValueError):
    """Gate settings that cannot be used."""


@dataclass(frozen=True)
class GateSettings:
    """When a new export may replace the serving one."""

    gate: str = "on"
    min_improvement: float = 0.0
    first_deploy_max_ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.gate not in GATES:
            raise GateError(f"gate {self.gate!r}: use 'on' (compare before deploying) or 'off' (always deploy)")
        if not 0.0 <= self.min_improvement < 1.0:
            raise GateError(f"min_improvement {self.min_improvement:g} must be in [0, 1): a relative improvement")
        if self.first_deploy_max_ratio <= 0:
            raise GateError(f"first_deploy_max_ratio {self.first_deploy_max_ratio:g} must be positive")


@dataclass(frozen=True)
class Serving:
    """The export an existing InferenceService serves."""

    storage_uri: str
    evaluation: Evaluation | None = None
    unreadable: str = ""
    """Why its evaluation could not be read; empty when it was (or was not needed)."""


@dataclass(frozen=True)
class Verdict:
    """Whether to deploy, and why."""

    deploy: bool
    reason: str
    """One paragraph with the numbers."""
    new: Evaluation | None
    serving: Serving | None

    def markdown(self) -> str:
        """The verdict as the Markdown page the deploy step shows in the KFP UI."""
        title = "Deployed" if self.deploy else "Not deployed: the serving export was kept"
        lines = [f"# Deploy gate: {title}", "", self.reason]
        if self.new is None and self.serving is None:  # the gate was off: nothing was read
            return "\n".join(lines) + "\n"
        lines += ["", f"| | {METRIC} | ratio to baseline | held-out |", "|---|---|---|---|"]
        rows = [("new export", self.new)]
        if self.serving is not None:
            rows.append((f"serving (`{self.serving.storage_uri}`)", self.serving.evaluation))
        for label, ev in rows:
            if ev is None:
                lines.append(f"| {label} | none recorded | | |")
            else:
                held = ", ".join(f"{k}={v}" for k, v in ev.held_out.items())
                lines.append(f"| {label} | {ev.pre_error:.6g} | {_ratio(ev)} | {held} |")
        return "\n".join(lines) + "\n"

    def metadata(self) -> dict[str, Any]:
        """The numbers, for the KFP artifact's metadata."""
        serving = self.serving.evaluation if self.serving else None
        return {
            "gate_deploy": self.deploy,
            "gate_reason": self.reason,
            "new_pre_error": self.new.pre_error if self.new else None,
            "serving_pre_error": serving.pre_error if serving else None,
            "serving_storage_uri": self.serving.storage_uri if self.serving else None,
        }


def _ratio(ev: Evaluation) -> str:
    return "n/a" if ev.ratio is None else f"{ev.ratio:.4f}"


def decide(new: Evaluation | None, new_uri: str, serving: Serving | None, settings: GateSettings) -> Verdict:
    """The gate's verdict for the export at `new_uri` scored `new` against what serves now (pure)."""

    def verdict(deploy: bool, reason: str) -> Verdict:
        return Verdict(deploy, reason, new, serving)

    if settings.gate == "off":
        return verdict(True, "The gate is off (gate=off): deployed without comparing.")
    if serving is not None and serving.storage_uri.rstrip("/") == new_uri.rstrip("/"):
        return verdict(True, f"The service already serves this export ({new_uri}): applied again, nothing to compare.")
    if new is None:
        return verdict(
            False,
            f"The new export carries no {EVALUATION_NAME}, so it cannot be compared with anything. Fix: export it "
            f"with the evaluate step's results (`asymvae export --eval metrics.json`). {_OVERRIDE}",
        )
    if serving is None:
        ratio, limit = new.ratio, settings.first_deploy_max_ratio
        if ratio is None:
            return verdict(
                False,
                f"First deploy: the new export's {METRIC} is {new.pre_error:.6g} but its evaluation records no "
                f"baseline score to hold it against (first_deploy_max_ratio {limit:g}). {_OVERRIDE}",
            )
        passed = ratio < limit
        return verdict(
            passed,
            f"First deploy: the new export's {METRIC} is {new.pre_error:.6g}, {ratio:.4f} times the baseline VAE's "
            f"{new.baseline_pre_error:.6g}, {'below' if passed else 'not below'} first_deploy_max_ratio {limit:g}"
            + ("." if passed else f": not deployed. {_OVERRIDE}"),
        )
    old = serving.evaluation
    if old is None:
        return verdict(
            False,
            f"The serving export ({serving.storage_uri}) has no readable {EVALUATION_NAME}: {serving.unreadable} "
            f"The new export ({METRIC} {new.pre_error:.6g}) cannot be compared with it and was not deployed. "
            + _OVERRIDE,
        )
    differ = sorted(k for k in set(new.held_out) | set(old.held_out) if new.held_out.get(k) != old.held_out.get(k))
    if differ:
        diffs = "; ".join(f"{k}: new {new.held_out.get(k)!r}, serving {old.held_out.get(k)!r}" for k in differ)
        return verdict(
            False,
            f"The two exports were scored on different held-out evaluations ({diffs}), so their {METRIC} "
            f"({new.pre_error:.6g} new, {old.pre_error:.6g} serving) are not comparable: not deployed. "
            f"Evaluate both on the same data, or: {_OVERRIDE}",
        )
    bar = old.pre_error * (1.0 - settings.min_improvement)
    change = (old.pre_error - new.pre_error) / old.pre_error if old.pre_error else 0.0
    numbers = (
        f"{METRIC}: new {new.pre_error:.6g}, serving {old.pre_error:.6g} ({100 * change:+.2f}% improvement; "
        f"required: below {bar:.6g}, min_improvement {settings.min_improvement:g})"
    )
    if new.pre_error < bar:
        return verdict(True, f"The new export beats the serving one on the same held-out evaluation. {numbers}.")
    return verdict(
        False,
        f"The new export does not beat the serving one on the same held-out evaluation: kept {serving.storage_uri}. "
        f"{numbers}. {_OVERRIDE}",
    )


def find_evaluation(uri: str) -> Evaluation | None:
    """The evaluation.json of the export at `uri` (a folder or an `s3://` prefix): at its root, else in its one
    model folder (a Triton repository); None when it has none. Raises UserError (StorageError, ExportError) when
    it cannot be read or parsed, or several model folders have one."""
    store = open_store(uri)
    found = [o.key for o in store.list() if o.key == EVALUATION_NAME or o.key.endswith(f"/{EVALUATION_NAME}")]
    found = [k for k in found if k.count("/") <= 1]
    if not found:
        return None
    if EVALUATION_NAME in found:
        found = [EVALUATION_NAME]
    if len(found) > 1:
        raise GateError(f"{uri} holds several model folders with an {EVALUATION_NAME} ({', '.join(found)})")
    return parse_evaluation(store.get(found[0]), store.url(found[0]))


def _serving(isvc: dict[str, Any], new_uri: str) -> Serving:
    uri = storage_uri(isvc)
    if not uri:
        reason = "the InferenceService names no storage URI (model.storageUri, or a custom predictor's STORAGE_URI)."
        return Serving("", None, reason)
    if uri.rstrip("/") == new_uri.rstrip("/"):
        return Serving(uri)
    if not is_s3_uri(uri):
        return Serving(uri, None, "it is not in an object store the step reads (s3://).")
    try:
        found = find_evaluation(uri)
    except UserError as e:
        return Serving(uri, None, str(e).rstrip(".") + ".")
    if found is None:
        return Serving(uri, None, f"no {EVALUATION_NAME} there (an export made without --eval, or before the gate).")
    return Serving(uri, found)


def check_gate(
    settings: GateSettings, name: str, namespace: str, repository: str, new_uri: str, api_client: Any = None
) -> Verdict:
    """The verdict for deploying the export at `new_uri` (its local copy: `repository`) as InferenceService
    `namespace/name`. With the gate off nothing is read. Raises KubernetesAPIError when the API server refuses
    the read, and UserError when the new export's own evaluation.json cannot be read."""
    if settings.gate == "off":
        return decide(None, new_uri, None, settings)
    new = find_evaluation(repository)
    isvc = read_inferenceservice(name, namespace, api_client)
    serving = None if isvc is None else _serving(isvc, new_uri)
    result = decide(new, new_uri, serving, settings)
    log.info("deploy gate: %s", result.reason)
    return result
