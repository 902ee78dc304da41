"""The deploy gate's decision (asymvae.serving.gate.decide, pure), where it finds an export's evaluation.json, and
where it finds the storage URI of the export an InferenceService serves (both predictor shapes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asymvae.export import ExportError
from asymvae.export.evaluation import FORMAT, Evaluation
from asymvae.serving.gate import GateError, GateSettings, Serving, decide, find_evaluation
from asymvae.serving.inferenceservice import InferenceServiceSpec, build_inferenceservice, storage_uri

HELD_OUT = {"data": "s3://asymvae/eval", "split": "val", "images": 64, "resolution": 256, "mask_seed": 1,
            "latents": "baseline encoder, posterior mode", "decoding": "whole images"}  # fmt: skip
NEW = "s3://mlpipeline/v2/artifacts/asymvae/run-2/export/exported"
OLD = "s3://mlpipeline/v2/artifacts/asymvae/run-1/export/exported"
ON = GateSettings()


def _scored(pre_error: float, baseline: float | None = 0.004, **held_out: object) -> Evaluation:
    return Evaluation(pre_error, baseline, {**HELD_OUT, **held_out})


def test_a_better_export_replaces_the_serving_one() -> None:
    v = decide(_scored(0.001), NEW, Serving(OLD, _scored(0.002)), ON)
    assert v.deploy and "beats the serving one" in v.reason
    assert "new 0.001, serving 0.002 (+50.00% improvement" in v.reason
    assert "| new export | 0.001 | 0.2500 |" in v.markdown() and v.metadata()["serving_pre_error"] == 0.002


def test_a_worse_or_equal_export_is_kept_out_and_says_how_to_force() -> None:
    for score in (0.003, 0.002):
        v = decide(_scored(score), NEW, Serving(OLD, _scored(0.002)), ON)
        assert not v.deploy and f"kept {OLD}" in v.reason and "deploy_gate=off" in v.reason
        assert v.markdown().startswith("# Deploy gate: Not deployed: the serving export was kept")


def test_min_improvement_asks_for_a_relative_margin() -> None:
    serving = Serving(OLD, _scored(0.002))
    assert not decide(_scored(0.00195), NEW, serving, GateSettings(min_improvement=0.05)).deploy  # 2.5% better
    assert decide(_scored(0.0018), NEW, serving, GateSettings(min_improvement=0.05)).deploy  # 10% better


def test_different_held_out_evaluations_are_not_comparable() -> None:
    v = decide(_scored(0.0001, images=32), NEW, Serving(OLD, _scored(0.002)), ON)
    assert not v.deploy and "different held-out evaluations (images: new 32, serving 64)" in v.reason
    assert "not comparable" in v.reason and "gate=off" in v.reason


@pytest.mark.parametrize("score, deploys", [(0.003, True), (0.004, False), (0.005, False)])
def test_a_first_deploy_must_beat_the_baseline(score: float, deploys: bool) -> None:
    v = decide(_scored(score), NEW, None, ON)
    assert v.deploy is deploys and f"{score / 0.004:.4f} times the baseline VAE's 0.004" in v.reason
    assert decide(_scored(score), NEW, None, GateSettings(first_deploy_max_ratio=1.3)).deploy


def test_a_first_deploy_without_a_baseline_score_is_not_made() -> None:
    v = decide(_scored(0.001, baseline=None), NEW, None, ON)
    assert not v.deploy and "records no baseline score" in v.reason


def test_a_serving_export_without_an_evaluation_is_kept_with_the_reason() -> None:
    why = "no evaluation.json there (an export made without --eval, or before the gate)."
    v = decide(_scored(0.001), NEW, Serving(OLD, None, why), ON)
    assert not v.deploy and why in v.reason and OLD in v.reason and "gate=off" in v.reason


def test_a_new_export_without_an_evaluation_is_not_deployed() -> None:
    v = decide(None, NEW, None, ON)
    assert not v.deploy and "carries no evaluation.json" in v.reason and "--eval" in v.reason


def test_the_same_export_again_and_the_gate_off_deploy() -> None:
    assert "already serves this export" in decide(None, NEW, Serving(NEW + "/"), ON).reason
    assert decide(None, NEW, Serving(NEW + "/"), ON).deploy
    off = decide(_scored(0.009), NEW, Serving(OLD, _scored(0.001)), GateSettings(gate="off"))
    assert off.deploy and "gate is off" in off.reason
    page = decide(None, NEW, None, GateSettings(gate="off")).markdown()
    assert page == "# Deploy gate: Deployed\n\nThe gate is off (gate=off): deployed without comparing.\n"


def test_unusable_settings_are_refused() -> None:
    with pytest.raises(GateError, match="gate 'maybe'"):
        GateSettings(gate="maybe")
    with pytest.raises(GateError, match="min_improvement 1 must be in"):
        GateSettings(min_improvement=1.0)
    with pytest.raises(GateError, match="first_deploy_max_ratio 0 must be positive"):
        GateSettings(first_deploy_max_ratio=0)


def _record(pre_error: float) -> str:
    return json.dumps({"format": FORMAT, "pre_error": pre_error, "baseline_pre_error": 0.004, "held_out": HELD_OUT})


def test_an_exports_evaluation_is_found_at_its_root_or_in_its_one_model_folder(tmp_path: Path) -> None:
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "evaluation.json").write_text(_record(0.001))
    assert find_evaluation(str(tmp_path / "hf")) == _scored(0.001)
    (tmp_path / "repo" / "decoder" / "1").mkdir(parents=True)
    assert find_evaluation(str(tmp_path / "repo")) is None
    (tmp_path / "repo" / "decoder" / "evaluation.json").write_text(_record(0.002))
    (tmp_path / "repo" / "decoder" / "1" / "evaluation.json").write_text("not this one")  # too deep
    assert find_evaluation(str(tmp_path / "repo")) == _scored(0.002)
    (tmp_path / "repo" / "other").mkdir()
    (tmp_path / "repo" / "other" / "evaluation.json").write_text(_record(0.003))
    with pytest.raises(GateError, match="several model folders"):
        find_evaluation(str(tmp_path / "repo"))
    (tmp_path / "hf" / "evaluation.json").write_text('{"format": "asymvae-evaluation/1", "pre_error": null}')
    with pytest.raises(ExportError, match=r"not an evaluation.json written by .*\(pre_error None is not a finite"):
        find_evaluation(str(tmp_path / "hf"))


def test_the_storage_uri_of_either_predictor_shape() -> None:
    triton = build_inferenceservice(InferenceServiceSpec(name="d", storage_uri=OLD))
    assert storage_uri(triton) == OLD
    custom = build_inferenceservice(InferenceServiceSpec(name="d", storage_uri=NEW, runtime="predictor", image="a"))
    assert storage_uri(custom) == NEW
    assert storage_uri({"spec": {"predictor": {"containers": [{"name": "c"}]}}}) == ""
