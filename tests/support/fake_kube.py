"""A stand-in Kubernetes API server (no cluster can run here) for the endpoints the job runner and the deploy
step call, speaking the REST paths the real `kubernetes` client uses, so tests drive the real client:

- `/apis/GROUP/VERSION/namespaces/NS/PLURAL[/NAME]` for PyTorchJobs, TrainJobs and InferenceServices:
  POST, GET, PUT, PATCH (merge patch), DELETE. Every created or replaced object is decoded as the API server
  decodes a custom resource: a field its CRD's schema does not define is pruned (the default field
  validation, `Warn`; recorded in `pruned`) or, with the query `fieldValidation=Strict`, refused with HTTP
  400 and the API server's words (`strict decoding error: unknown field "spec.x"`; recorded in
  `strict_refusals`), after k8s.io/apiextensions-apiserver v0.35.0 pkg/apiserver/schema/pruning/algorithm.go
  (which fields, their paths, sorted), pkg/apiserver/customresource_handler.go (`schemaCoercingDecoder`),
  k8s.io/apimachinery pkg/runtime/error.go (`strictDecodingError`) and k8s.io/apiserver
  pkg/endpoints/handlers/create.go and rest.go (`fieldValidation`, `transformDecodeError`). What is left is
  validated against the CRD (closed objects; HTTP 422 as from the API server). TrainJobs also go through
  the rules of Trainer's admission webhook that the CRD does not carry (pkg/runtime/framework/plugins/jobset
  and torch). Which Trainer serves them is `trainer`: "v2.3" (the v2.3 line's CRD, `runtimePatches`) or
  "v2.1" (v2.1.0's, which Kubeflow 26.03 installs: `podTemplateOverrides`, no `runtimePatches`). An
  InferenceService is accepted as the API server would, and its status follows what KServe and Knative make
  of it (`FakeKnativeService`); the pod KServe makes of it (tests/support/kserve_runtime.py: the runtime
  merged in, or a custom predictor's containers as written) decides whether its revisions become ready, or
  fail with the pod's validation error.
- `/api/v1/namespaces/NS/pods` (label selector) and `/pods/POD/log`: the pods the operator would have made
  for each job (PyTorchJob: `<job>-master-0`, TrainJob: `<job>-node-0-0`), labelled as upstream labels them,
  with scripted container states (restarts, termination reasons).
- `/apis/GROUP/VERSION`: API discovery, as kube-apiserver's apiextensions discovery controller answers it
  (kubernetes staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/customresource_discovery_controller.go):
  an APIResourceList of every served CRD of that group version (`plural` and `plural/status`, `plural/scale`),
  404 when none is served there. Only the kinds in `served` exist (their objects' paths answer 404 otherwise).
  By default that is what a stock Kubeflow install serves (`STOCK`, after kubeflow/manifests 26.03
  example/kustomization.yaml: Trainer v2 and KServe installed, Training Operator v1 commented out), with the
  platform's other kinds beside them (Trainer's runtimes; Notebook and Profile in `kubeflow.org/v1`).

Each GET of an object returns the next status of a scripted sequence (the last one repeats); an
InferenceService without a script moves one controller step per GET. As the API server does for a custom
resource (k8s.io/apiextensions-apiserver pkg/registry/customresource/strategy.go, `PrepareForUpdate`), an
update raises `metadata.generation` only when something besides the metadata changed. With a
`service_account`, every request must carry its token and stay in its namespace: anything else is refused
(401, 403) as the API server refuses a service account acting elsewhere; with `rbac_rules` (a Role's rules)
a request those rules do not allow is refused too. Discovery needs only the token: Kubernetes binds the
ClusterRole `system:discovery` (GET on `/api/*`, `/apis/*`) to every authenticated user (kubernetes
plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go).
"""

from __future__ import annotations

import functools
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import yaml

from tests.support.crd import schema_errors
from tests.support.http_standin import LoopbackServer, Request, json_handler
from tests.support.k8s_schemas import INFERENCESERVICE_CRD, PYTORCHJOB_CRD, TRAINJOB_CRD, TRAINJOB_V21_CRD
from tests.support.kserve_runtime import merged_pod_errors

_OBJECTS = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)(/(?P<name>[^/]+))?$"
)
_PODS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods(/(?P<pod>[^/]+)(?P<log>/log)?)?$")
_DISCOVERY = re.compile(r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)$")
CRDS = {"pytorchjobs": PYTORCHJOB_CRD, "trainjobs": TRAINJOB_CRD, "inferenceservices": INFERENCESERVICE_CRD}
TRAINERS = {"v2.3": TRAINJOB_CRD, "v2.1": TRAINJOB_V21_CRD}
"""The TrainJob CRD of each Trainer the stand-in can serve (tests/schemas/README.md names their sources)."""
STRICT = "Strict"
STOCK = frozenset({"trainjobs", "inferenceservices"})
"""The kinds of CRDS a stock Kubeflow serves: kubeflow/manifests 26.03 example/kustomization.yaml installs
`applications/trainer/overlays` (Trainer v2.1.0) and KServe, and lists Training Operator v1 commented out."""
WITH_TRAINING_OPERATOR = STOCK | {"pytorchjobs"}
"""A Kubeflow with Training Operator v1 installed beside Trainer."""
_INSTALLED_WITH = {
    # Trainer's other kinds (kubeflow/manifests 26.03 applications/trainer/upstream/base/crds/).
    "trainjobs": [
        ("trainingruntimes", "trainingruntime", "TrainingRuntime", True),
        ("clustertrainingruntimes", "clustertrainingruntime", "ClusterTrainingRuntime", False),
    ],
}
_KUBEFLOW_CORE = {
    # Served by every Kubeflow install (kubeflow/manifests 26.03): the notebook controller's Notebook
    # (applications/jupyter/notebook-controller/upstream/crd/bases/kubeflow.org_notebooks.yaml) and the Profile
    # (applications/profiles/upstream/crd/bases/kubeflow.org_profiles.yaml). So `kubeflow.org/v1` is served
    # without Training Operator v1, and discovery lists no pytorchjobs there.
    ("kubeflow.org", "v1"): [("notebooks", "notebook", "Notebook", True), ("profiles", "profile", "Profile", False)],
}
_CRD_VERBS = ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]
TOKEN = "fake-service-account-token"
"""The bearer token of the fake's service account (`service_account`)."""
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_TORCHRUN_ENV = {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"}
_DOMAIN_PATH = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/.+$")


def condition(kind: str, reason: str = "", message: str = "", status: str = "True") -> dict[str, Any]:
    """A job or InferenceService status condition (holding by default)."""
    return {"type": kind, "status": status, "reason": reason or f"Job{kind}", "message": message}


def status(*kinds: str, reason: str = "", message: str = "") -> dict[str, Any]:
    """A status whose conditions are `kinds` in order; the last one gets `reason`/`message`."""
    conds = [condition(k) for k in kinds]
    if conds and (reason or message):
        conds[-1] = condition(kinds[-1], reason, message)
    return {"conditions": conds}


@dataclass
class PodState:
    """What rank 0's training container reports at one status read."""

    restarts: int = 0
    reason: str = ""
    """The last termination's reason, e.g. OOMKilled ("" when it never ended)."""
    exit_code: int = 0
    phase: str = "Running"

    def to_status(self, container: str) -> dict[str, Any]:
        last = {"terminated": {"exitCode": self.exit_code, "reason": self.reason}} if self.reason else {}
        return {
            "phase": self.phase,
            "containerStatuses": [
                {
                    "name": container,
                    "image": "asymvae",
                    "imageID": "",
                    "ready": self.phase == "Running",
                    "restartCount": self.restarts,
                    "state": {"running": {}},
                    "lastState": last,
                }
            ],
        }


@dataclass
class FakeKnativeService:
    """The Knative Service `<name>-predictor` that KServe keeps for a serverless InferenceService, reduced to
    what the InferenceService's status shows of it. Modelled on kserve v0.16.0:
    pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go (KServe rewrites the
    Service's template when the InferenceService's spec, annotations or labels change, and returns the
    Service's status from before that write), pkg/apis/serving/v1beta1/inference_service_status.go
    (`PropagateStatus` copies that status into the InferenceService's: conditions, revisions, traffic, and
    the Service's own `observedGeneration`; Ready needs PredictorReady and IngressReady), and on knative/serving
    (a revision per template, named `<configuration>-<5-digit generation>` by
    pkg/reconciler/configuration/resources/revision.go)."""

    generation: int = 1
    """The Knative Service's own metadata.generation: one more at each template KServe writes."""
    observed: int = 0
    """Its status.observedGeneration (what Knative has seen)."""
    created: int = 0
    """Its latest created revision (0: none yet)."""
    ready: int = 0
    """Its latest ready revision (0: none yet)."""
    template: str = ""
    """What KServe built its template from."""
    pending: bool = True
    """A template Knative has not made a revision of yet."""
    steps: int = 0
    """InferenceService reads since the last template."""
    last: dict[str, Any] = field(default_factory=dict)
    """The InferenceService status KServe wrote last."""

    @classmethod
    def rolled_out(cls, isvc: dict[str, Any], generation: int) -> FakeKnativeService:
        """A Service whose `generation` templates were all rolled out, the last one from `isvc`."""
        return cls(generation, generation, generation, generation, _template(isvc), pending=False, steps=10**6)


@dataclass
class FakeObject:
    obj: dict[str, Any]
    statuses: list[dict[str, Any]]
    log: str = ""
    pods: list[PodState] = field(default_factory=list)
    reads: int = 0
    ksvc: FakeKnativeService | None = None
    """An InferenceService's Knative Service."""


@dataclass
class FakeKube:
    """The server's state: objects, their scripted statuses and logs, and the requests seen."""

    scripts: dict[str, tuple[list[dict[str, Any]], str, list[PodState]]] = field(default_factory=dict)
    objects: dict[tuple[str, str, str], FakeObject] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    invalid_bodies: list[list[str]] = field(default_factory=list)
    pruned: list[list[str]] = field(default_factory=list)
    """The unknown fields of each body the server pruned (any field validation but `Strict`)."""
    strict_refusals: list[list[str]] = field(default_factory=list)
    """The unknown fields of each body refused under `fieldValidation=Strict`."""
    created: list[dict[str, Any]] = field(default_factory=list)
    """Every object as the server stored it when it was created (after pruning), deleted ones included."""
    trainer: str = "v2.3"
    """The Trainer whose TrainJob CRD is served: a key of TRAINERS."""
    service_account: tuple[str, str] | None = None
    """(namespace, name) of the account every request must authenticate as; None: no authentication."""
    served: frozenset[str] = STOCK
    """The kinds of CRDS whose CRD is installed (by plural)."""
    rbac_rules: list[dict[str, Any]] | None = None
    """The rules of the Role bound to `service_account` (None: everything in its namespace is allowed)."""
    refused: list[str] = field(default_factory=list)
    """Why each 401/403 was answered."""
    isvc_url: str = "http://asymvae-decoder.example.svc.cluster.local"
    """`status.address.url` of a Ready InferenceService."""
    rollout_reads: int = 2
    """InferenceService reads a rollout takes: the first shows the status from before the change (as KServe
    writes it), the next ones the new revision not yet ready; 0: rolled out by the first read."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def script(self, name: str, statuses: list[dict[str, Any]], log: str = "", pods: list[PodState] | None = None):
        """What an object named `name` reports once created: successive statuses, rank 0's log, and rank 0's
        pod state at each status read (the last one repeats)."""
        self.scripts[name] = (statuses, log, list(pods or []))

    def add_existing(self, obj: dict[str, Any], statuses: list[dict[str, Any]], log: str = "") -> None:
        """An object that exists before the test's runner starts."""
        plural = _plural(obj)
        key = (plural, obj["metadata"]["namespace"], obj["metadata"]["name"])
        self.objects[key] = FakeObject(json.loads(json.dumps(obj)), statuses, log)

    def add_existing_inferenceservice(self, obj: dict[str, Any], generation: int, ksvc_generation: int) -> None:
        """An InferenceService rolled out before the test, at `generation`, whose Knative Service is at
        `ksvc_generation`: a counter of its own (KServe rewrites the Service when a ServingRuntime changes;
        a Service made again starts at 1)."""
        stored = _stored(json.loads(json.dumps(obj)), generation)
        key = (_plural(obj), obj["metadata"]["namespace"], obj["metadata"]["name"])
        self.objects[key] = FakeObject(stored, [{}], ksvc=FakeKnativeService.rolled_out(stored, ksvc_generation))

    @property
    def jobs(self) -> dict[tuple[str, str], FakeObject]:
        """The training jobs that exist, by (namespace, name)."""
        return {(ns, name): o for (plural, ns, name), o in self.objects.items() if plural != "inferenceservices"}

    def calls(self, method: str, path_part: str = "") -> list[Request]:
        """Requests with this method whose path contains `path_part`."""
        return [r for r in self.requests if r.method == method and path_part in r.path]

    # -- request handling ------------------------------------------------------------------------

    def handle(self, req: Request) -> tuple[int, Any]:
        with self.lock:
            self.requests.append(req)
            discovery = _DISCOVERY.match(req.path)
            if discovery and req.method == "GET":
                return self._discovery(req, discovery.group("group"), discovery.group("version"))
            obj, pods = _OBJECTS.match(req.path), _PODS.match(req.path)
            match = obj or pods
            if match is None:
                return 404, _status(404, "NotFound", f"no route {req.method} {req.path}")
            if pods:
                resource = "pods/log" if pods.group("log") else "pods"
                group, verb = "", "get" if pods.group("pod") else "list"
            else:
                resource, group = obj.group("plural"), obj.group("group")
                verb = _VERBS.get(req.method) or ("get" if obj.group("name") else "list")
            denied = self._authorize(req, match.group("ns"), group, resource, verb)
            if denied:
                return denied
            return self._objects(req, obj) if obj else self._pods(req, pods)

    def _discovery(self, req: Request, group: str, version: str) -> tuple[int, Any]:
        """The APIResourceList of `group`/`version`: any authenticated user may read it (system:discovery)."""
        if self._unauthenticated(req):
            return 401, _status(401, "Unauthorized", "Unauthorized")
        resources = []
        for plural in sorted(self.served):
            found = _crd_resources(self.crd(plural), group, version)
            resources += found + [_api_resource(*r, _CRD_VERBS) for r in _INSTALLED_WITH.get(plural, []) if found]
        resources += [_api_resource(*r, _CRD_VERBS) for r in _KUBEFLOW_CORE.get((group, version), [])]
        if not resources:
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}",
                     "resources": resources}  # fmt: skip

    def crd(self, plural: str) -> Any:
        """The path of the CRD this server serves `plural` with."""
        return TRAINERS[self.trainer] if plural == "trainjobs" else CRDS[plural]

    def _unauthenticated(self, req: Request) -> bool:
        if self.service_account is None or req.bearer_token == TOKEN:
            return False
        self.refused.append(f"401 {req.method} {req.path}: no or wrong token")
        return True

    def _authorize(self, req: Request, ns: str, group: str, resource: str, verb: str) -> tuple[int, Any] | None:
        if self.service_account is None:
            return None
        sa_ns, sa_name = self.service_account
        user = f"system:serviceaccount:{sa_ns}:{sa_name}"
        if self._unauthenticated(req):
            return 401, _status(401, "Unauthorized", "Unauthorized")
        allowed = ns == sa_ns and (
            self.rbac_rules is None
            or any(
                group in r.get("apiGroups", []) and resource in r.get("resources", []) and verb in r.get("verbs", [])
                for r in self.rbac_rules
            )
        )
        if allowed:
            return None
        message = f'{resource} is forbidden: User "{user}" cannot {verb} resource "{resource}" in the namespace "{ns}"'
        self.refused.append(f"403 {message}")
        return 403, _status(403, "Forbidden", message)

    def _objects(self, req: Request, m: re.Match) -> tuple[int, Any]:
        plural, ns, name = m.group("plural"), m.group("ns"), m.group("name")
        if plural not in self.served:
            return 404, _status(404, "NotFound", f"the server could not find the requested resource ({plural})")
        if req.method == "POST" and name is None:
            body, refusal = self._admit(plural, req)
            if refusal:
                return refusal
            key = (plural, ns, body["metadata"]["name"])
            if key in self.objects:
                return 409, _status(409, "AlreadyExists", f'{plural} "{key[2]}" already exists')
            statuses, log, pods = self.scripts.get(key[2], ([{}], "", []))
            obj = _stored(body, generation=1)
            ksvc = FakeKnativeService(template=_template(obj)) if plural == "inferenceservices" else None
            self.objects[key] = FakeObject(obj, statuses, log, pods, ksvc=ksvc)
            self.created.append(json.loads(json.dumps(obj)))
            return 201, obj
        found = self.objects.get((plural, ns, name or ""))
        if found is None:
            return 404, _status(404, "NotFound", f'{plural} "{name}" not found')
        if req.method == "GET":
            return 200, {**found.obj, "status": self._next_status(found)}
        if req.method == "DELETE":
            del self.objects[(plural, ns, name)]
            return 200, _status(200, "Success", "")
        if req.method == "PATCH":
            found.obj = _merge_patch(found.obj, req.body)
            return 200, found.obj
        if req.method == "PUT":
            body, refusal = self._admit(plural, req)
            if refusal:
                return refusal
            version = body.get("metadata", {}).get("resourceVersion")
            if version != found.obj["metadata"]["resourceVersion"]:
                return 409, _status(409, "Conflict", f"the object has been modified (resourceVersion {version})")
            generation = found.obj["metadata"]["generation"]
            if _non_metadata(body) != _non_metadata(found.obj):
                generation += 1
            found.obj, found.reads = _stored(body, generation), 0
            if found.ksvc and _template(found.obj) != found.ksvc.template:
                found.ksvc.generation += 1
                found.ksvc.template, found.ksvc.pending, found.ksvc.steps = _template(found.obj), True, 0
            return 200, found.obj
        return 405, _status(405, "MethodNotAllowed", req.method)

    def _admit(self, plural: str, req: Request) -> tuple[dict[str, Any], tuple[int, Any] | None]:
        """(the body as the server keeps it, None), or (the body, the refusal): the decoding (unknown fields
        pruned, or refused under strict field validation), the CRD's schema, Trainer's webhook."""
        body, crd = json.loads(json.dumps(req.body)), self.crd(plural)
        unknown = prune_unknown_fields(body, crd)
        if unknown and req.query.get("fieldValidation", ["Warn"])[0] == STRICT:
            self.strict_refusals.append(unknown)
            kind, version = body.get("kind", "?"), body.get("apiVersion", "").rpartition("/")[2]
            fields = ", ".join(f'unknown field "{path}"' for path in unknown)
            message = f'{kind} in version "{version}" cannot be handled as a {kind}: strict decoding error: {fields}'
            return body, (400, _status(400, "BadRequest", message))
        if unknown:
            self.pruned.append(unknown)
        errors = schema_errors(body, crd)
        if plural == "trainjobs" and not errors:
            errors = trainjob_webhook_errors(body)
        if errors:
            self.invalid_bodies.append(errors)
            return body, (422, _status(422, "Invalid", "; ".join(errors)))
        return body, None

    def _next_status(self, found: FakeObject) -> dict[str, Any]:
        current = found.statuses[min(found.reads, len(found.statuses) - 1)]
        found.reads += 1
        if found.ksvc is None or current:
            return current
        return self._isvc_status(found.obj, found.ksvc)

    def _isvc_status(self, isvc: dict[str, Any], ksvc: FakeKnativeService) -> dict[str, Any]:
        """One controller step of KServe and Knative, and the InferenceService status KServe then writes."""
        step, ksvc.steps = ksvc.steps, ksvc.steps + 1
        if step == 0 and self.rollout_reads > 0:
            return ksvc.last  # KServe has written the new template and copied the Service's old status
        if ksvc.pending:  # Knative has seen the template and made its revision
            ksvc.observed, ksvc.created, ksvc.pending = ksvc.generation, ksvc.created + 1, False
        name = isvc["metadata"]["name"]

        def revision(number: int) -> str:
            return f"{name}-predictor-{number:05d}"

        problems = merged_pod_errors(isvc) if step >= self.rollout_reads else []
        if step >= self.rollout_reads and not problems:
            ksvc.ready = ksvc.created
        if problems:
            message = f'Revision "{revision(ksvc.created)}" failed: predictor pod is invalid: {"; ".join(problems)}'
            predictor = _isvc_condition("PredictorReady", "False", "RevisionFailed", message)
        else:
            predictor = _isvc_condition("PredictorReady", "True" if ksvc.ready == ksvc.created else "Unknown")
        ingress = _isvc_condition("IngressReady", "True" if ksvc.ready else "Unknown")
        both = {predictor["status"], ingress["status"]}
        ready = "False" if "False" in both else "True" if both == {"True"} else "Unknown"
        blocking = predictor if predictor["status"] != "True" else ingress
        conditions = [ingress, predictor, {**blocking, "type": "Ready", "status": ready}]
        component: dict[str, Any] = {"latestCreatedRevision": revision(ksvc.created)}
        status: dict[str, Any] = {
            "deploymentMode": "Serverless",
            "observedGeneration": ksvc.observed,
            "conditions": conditions,
            "components": {"predictor": component},
        }
        if ksvc.ready:
            component["latestReadyRevision"] = revision(ksvc.ready)
            component["traffic"] = [{"revisionName": revision(ksvc.ready), "percent": 100, "latestRevision": True}]
            status.update(address={"url": self.isvc_url}, url=self.isvc_url)
        ksvc.last = status
        return status

    def _pods(self, req: Request, m: re.Match) -> tuple[int, Any]:
        ns = m.group("ns")
        pods = {}
        for (plural, job_ns, name), job in self.objects.items():
            if job_ns == ns and plural != "inferenceservices":
                pods[_rank0_pod(plural, name)] = (plural, name, job)
        if m.group("pod") is None:
            wanted = dict(item.split("=", 1) for item in req.query.get("labelSelector", [""])[0].split(",") if item)
            items = []
            for pod_name, (plural, job_name, job) in pods.items():
                labels = _rank0_labels(plural, job_name)
                if all(labels.get(k) == v for k, v in wanted.items()):
                    items.append(_pod(pod_name, ns, plural, labels, job))
            return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}
        if m.group("log") and m.group("pod") in pods:
            text = pods[m.group("pod")][2].log
            tail = req.query.get("tailLines")
            if tail:
                text = "\n".join(text.splitlines()[-int(tail[0]) :])
            return 200, text
        return 404, _status(404, "NotFound", f"pod {m.group('pod')} not found")


_VERSIONS = iter(range(1000, 10**9))
_EMBEDDED_META = ("apiVersion", "kind", "metadata")


@functools.lru_cache(maxsize=8)
def _crd(path: Any) -> dict[str, Any]:
    with open(path) as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def prune_unknown_fields(obj: dict[str, Any], crd_path: Any) -> list[str]:
    """Drop from `obj` (in place) every field its CRD's schema does not define, and return their paths, sorted,
    as the API server reports them (`spec.x`, `spec.list[0].y`). Modelled on k8s.io/apiextensions-apiserver
    pkg/apiserver/schema/pruning/algorithm.go (`PruneWithOptions`): the object is a resource root (its
    apiVersion, kind and metadata are kept), so is an `x-kubernetes-embedded-resource`; below
    `x-kubernetes-preserve-unknown-fields` nothing unlisted is dropped; `additionalProperties` is the schema
    of every key it admits. The metadata's own fields (ObjectMeta's coercion) are not checked."""
    version = obj.get("apiVersion", "").rpartition("/")[2]
    schemas = [v["schema"]["openAPIV3Schema"] for v in _crd(crd_path)["spec"]["versions"] if v["name"] == version]
    unknown: list[str] = []
    if schemas:
        _prune(obj, {**schemas[0], "x-kubernetes-embedded-resource": True}, "", unknown)
    return sorted(unknown)


def _prune(value: Any, schema: dict[str, Any] | None, path: str, unknown: list[str], skip: bool = False) -> None:
    """algorithm.go's `prune`, or with `skip` its `skipPrune` (below x-kubernetes-preserve-unknown-fields:
    unlisted fields stay, listed ones are pruned by their own schema)."""
    skip = skip or bool(schema and schema.get("x-kubernetes-preserve-unknown-fields"))
    if skip and schema is None:
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _prune(item, schema.get("items") if schema else None, f"{path}[{i}]", unknown, skip)
        return
    if not isinstance(value, dict):
        return
    properties = (schema or {}).get("properties", {})
    extra = (schema or {}).get("additionalProperties")
    for key in list(value):
        where = f"{path}.{key}" if path else key
        if schema is not None and schema.get("x-kubernetes-embedded-resource") and key in _EMBEDDED_META:
            continue
        if key in properties:
            _prune(value[key], properties[key], where, unknown)
        elif extra is not None:  # a schema, or `true`: a structural schema's additionalProperties is never false
            _prune(value[key], extra if isinstance(extra, dict) else None, where, unknown)
        elif not skip:
            unknown.append(where)
            del value[key]


def _crd_resources(path: Any, group: str, version: str) -> list[dict[str, Any]]:
    """The discovery entries of the CRD at `path` in `group`/`version`: the resource and its subresources, as
    the apiextensions discovery controller lists them ([] when the CRD serves no such version)."""
    spec = _crd(path)["spec"]
    served = [v for v in spec["versions"] if v["name"] == version and v.get("served", True)]
    if spec["group"] != group or not served:
        return []
    names, namespaced = spec["names"], spec["scope"] == "Namespaced"
    found = [_api_resource(names["plural"], names["singular"], names["kind"], namespaced, _CRD_VERBS)]
    for sub in served[0].get("subresources") or {}:
        kind = "Scale" if sub == "scale" else names["kind"]  # a scale subresource answers autoscaling/v1 Scale
        found.append(_api_resource(f"{names['plural']}/{sub}", "", kind, namespaced, ["get", "patch", "update"]))
    return found


def _api_resource(name: str, singular: str, kind: str, namespaced: bool, verbs: list[str]) -> dict[str, Any]:
    return {"name": name, "singularName": singular, "namespaced": namespaced, "kind": kind, "verbs": verbs}


def _stored(obj: dict[str, Any], generation: int) -> dict[str, Any]:
    """`obj` as the API server stores it: with a uid, a resourceVersion and a generation."""
    meta = {**obj["metadata"], "resourceVersion": str(next(_VERSIONS)), "generation": generation}
    meta.setdefault("uid", f"uid-{meta['name']}-{generation}")
    return {**obj, "metadata": meta}


def _isvc_condition(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    """A condition as KServe writes it (knative.dev/pkg apis.Condition: reason and message only when set)."""
    return {
        "type": kind,
        "status": status,
        **({"reason": reason} if reason else {}),
        **({"message": message} if message else {}),
    }


def _non_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """What an update of a custom resource compares to decide on a new generation (status is ignored too)."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _template(isvc: dict[str, Any]) -> str:
    """What KServe builds the predictor's Knative template from: the spec, the annotations and the labels."""
    meta = isvc["metadata"]
    return json.dumps([isvc["spec"], meta.get("annotations"), meta.get("labels")], sort_keys=True)


def _plural(obj: dict[str, Any]) -> str:
    return {"PyTorchJob": "pytorchjobs", "TrainJob": "trainjobs", "InferenceService": "inferenceservices"}[obj["kind"]]


def _rank0_pod(plural: str, job: str) -> str:
    return f"{job}-master-0" if plural == "pytorchjobs" else f"{job}-node-0-0"


def _rank0_labels(plural: str, job: str) -> dict[str, str]:
    """The labels upstream puts on rank 0's pod: the training operator's, or JobSet's and the Job controller's."""
    if plural == "pytorchjobs":
        return {"training.kubeflow.org/job-name": job, "training.kubeflow.org/replica-type": "master"}
    return {
        "jobset.sigs.k8s.io/jobset-name": job,
        "jobset.sigs.k8s.io/replicatedjob-name": "node",
        "batch.kubernetes.io/job-completion-index": "0",
    }


def _pod(name: str, ns: str, plural: str, labels: dict[str, str], job: FakeObject) -> dict[str, Any]:
    container = "pytorch" if plural == "pytorchjobs" else "node"
    state = job.pods[min(max(job.reads - 1, 0), len(job.pods) - 1)] if job.pods else PodState()
    return {
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "labels": labels},
        "spec": {"containers": [{"name": container, "image": "asymvae"}]},
        "status": state.to_status(container),
    }


def trainjob_webhook_errors(job: dict[str, Any]) -> list[str]:
    """Trainer's TrainJob admission rules that its CRD does not express, for the `torch-distributed` runtime
    (one replicated job `node`, container `node`), from kubeflow/trainer pkg/runtime/framework/plugins:
    torch/torch.go (no torchrun variables in `spec.trainer.env`, v2.1.0 and v2.3), jobset/jobset.go `Validate`
    for `spec.runtimePatches` (v2.3) and for `spec.podTemplateOverrides` (v2.1.0: targetJobs and containers
    the runtime has, no env for the `node` container). Each CRD lets through only its own form."""
    errors = []
    reserved = sorted({e["name"] for e in job["spec"].get("trainer", {}).get("env", [])} & _TORCHRUN_ENV)
    if reserved:
        errors.append(f"spec.trainer.env: must not have reserved envs, invalid envs configured: {reserved}")
    for patch in job["spec"].get("runtimePatches", []):
        if not _DOMAIN_PATH.match(patch.get("manager", "")):
            errors.append(f"spec.runtimePatches.manager: {patch.get('manager')!r} must be a domain-prefixed path")
        spec = patch.get("trainingRuntimeSpec", {}).get("template", {}).get("spec", {})
        for rjob in spec.get("replicatedJobs", []):
            if rjob["name"] != "node":
                errors.append("spec.runtimePatches: must not have replicated job that doesn't exist in the runtime")
            pod = rjob.get("template", {}).get("spec", {}).get("template", {}).get("spec", {})
            for c in pod.get("containers", []):
                if c["name"] != "node":
                    errors.append(f"spec.runtimePatches: must not have container {c['name']!r}")
                elif c.get("env"):
                    errors.append("spec.runtimePatches: must not have envs for the node container")
    for override in job["spec"].get("podTemplateOverrides", []):
        if any(target["name"] != "node" for target in override["targetJobs"]):
            errors.append("spec.podTemplateOverrides: must not have targetJob that doesn't exist in the runtime job "
                          "template")  # fmt: skip
        spec = override.get("spec", {})
        for init in spec.get("initContainers", []):
            if init["name"] != "node":
                errors.append("spec.podTemplateOverrides: must not have initContainer that doesn't exist in the "
                              f"runtime job node: {init['name']!r}")  # fmt: skip
        for c in spec.get("containers", []):
            if c["name"] != "node":
                errors.append("spec.podTemplateOverrides: must not have container that doesn't exist in the "
                              f"runtime job node: {c['name']!r}")  # fmt: skip
            elif c.get("env"):
                errors.append("spec.podTemplateOverrides: must not have envs for the dataset-initializer, "
                              "model-initializer, node containers")  # fmt: skip
    return errors


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge_patch(out.get(k), v)
    return out


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


class FakeKubeServer:
    """Runs a FakeKube on 127.0.0.1 in a thread; `api_client()` is a real kubernetes client pointed at it."""

    def __init__(
        self,
        service_account: tuple[str, str] | None = None,
        rbac_rules: list[dict[str, Any]] | None = None,
        served: frozenset[str] = STOCK,
        trainer: str = "v2.3",
    ) -> None:
        self.state = FakeKube(service_account=service_account, rbac_rules=rbac_rules, served=served, trainer=trainer)
        self.server = LoopbackServer(json_handler(self.state.handle))
        self.state.url = self.server.url

    def __enter__(self) -> FakeKube:
        self.server.start()
        return self.state

    def __exit__(self, *exc: Any) -> None:
        self.server.stop()

    def kubeconfig(self, namespace: str, token: str = TOKEN) -> dict[str, Any]:
        """A kubeconfig for this server, as a run's pod would have it: its token, its namespace."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.state.url}}],
            "users": [{"name": "run", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "run", "namespace": namespace}}],
            "current-context": "fake",
        }

    def api_client(self, token: str | None = TOKEN) -> Any:
        """The real kubernetes ApiClient, configured for this server (with the service account's token)."""
        from kubernetes import client

        cfg = client.Configuration(host=self.state.url)
        if token:
            cfg.api_key = {"authorization": token}
            cfg.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(cfg)
