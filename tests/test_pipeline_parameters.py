"""Pipeline parameters: each reaches its pod with the type KFP's driver reads, each is declared once, and the
train step takes no input artifact (KFP's launcher would download it).

The driver's reading of placeholders is modelled from kubeflow/pipelines 2.16.0 (the KFP of the Kubeflow
platform release 26.03):
- backend/src/v2/driver/resolve.go:810-823 `resolvePodSpecInputRuntimeParameter` returns
  `val.GetStringValue()` for a resource, accelerator or image placeholder: "" for any value that is not a
  string, after which driver.go:404-410 sets no accelerator limit and getPodResource (driver.go:163-190)
  fails to parse the quantity;
- backend/src/v2/driver/resolve.go:832-850 `resolveK8sJsonParameter` (node selectors, k8s.go:186) reads
  `GetStructValue()`; tolerations (k8s.go:218-256) take a struct or a list;
- secret, config map and PVC names (k8s.go:299, 361, 393, 489, 1076) read `GetStringValue()`.
And backend/src/v2/component/launcher_v2.go:767-843 `downloadArtifacts` copies every input artifact of a
step into its pod before the step's code runs.
"""

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from asymvae.config import field_docs
from asymvae.steps.train import TrainStepConfig
from asymvae_components._params import disagreements, field_default, from_config, kfp_type
from asymvae_components.train.component import train
from asymvae_pipelines.asymvae_pipeline import PARAMETERS
from asymvae_pipelines.compiled import COMPONENTS, pipeline_yaml
from asymvae_pipelines.parameters import From

PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.parameters\['pipelinechannel--([\w-]+)'\]\}\}")
DRIVER_READS = {
    # field of the compiled platform spec (kfp-kubernetes) -> the parameter types the driver accepts there
    "nodeSelectorJson": {"STRUCT"},
    "tolerationJson": {"STRUCT", "LIST"},
    "secretNameParameter": {"STRING"},
    "pvcNameParameter": {"STRING"},
    "pvcMount": {"STRING"},  # its older componentInputParameter, read the same way (k8s.go:1066-1076)
    "configMapNameParameter": {"STRING"},
}


def driver_string_value(value: Any) -> str:
    """What the driver makes of a parameter's value in a resource placeholder (resolve.go:817: GetStringValue)."""
    return value if isinstance(value, str) else ""


def _compiled() -> tuple[dict, dict]:
    spec, platform = yaml.safe_load_all(pipeline_yaml())
    return spec, platform


def _component_inputs(spec: dict) -> dict[str, str]:
    return {name: p["parameterType"] for name, p in spec["root"]["inputDefinitions"]["parameters"].items()}


def _input_refs(node: Any, found: list[tuple[str, str]], field: str = "") -> None:
    """Every (platform field, pipeline parameter) a kfp-kubernetes setting takes from a parameter."""
    if isinstance(node, dict):
        ref = node.get("componentInputParameter")
        if isinstance(ref, str):
            found.append((field, ref.removeprefix("pipelinechannel--")))
        for key, value in node.items():
            _input_refs(value, found, key)
    elif isinstance(node, list):
        for item in node:
            _input_refs(item, found, field)


def test_every_placeholder_in_a_kubernetes_field_names_a_parameter_of_the_type_the_driver_reads() -> None:
    spec, platform = _compiled()
    types = _component_inputs(spec)
    checked = []
    for name, executor in spec["deploymentSpec"]["executors"].items():
        container = executor["container"]
        fields = {"image": container["image"], **container.get("resources", {})}
        fields.update({f"accelerator.{k}": v for k, v in container.get("resources", {}).get("accelerator", {}).items()})
        for field, value in fields.items():
            for param in PLACEHOLDER.findall(str(value)) if isinstance(value, str) else []:
                assert param in types, f"{name}.{field} names {param}, which is no pipeline parameter"
                assert types[param] == "STRING", (
                    f"{name}.{field} takes pipeline parameter {param!r} of type {types[param]}: KFP's driver reads "
                    "it with GetStringValue (resolve.go:817), so the pod would get nothing; make it a str"
                )
                checked.append(param)
    refs: list[tuple[str, str]] = []
    _input_refs(platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"], refs)
    for field, param in refs:
        assert field in DRIVER_READS, f"no rule for the kfp-kubernetes field {field!r} (parameter {param})"
        assert types.get(param) in DRIVER_READS[field], (
            f"{field} takes pipeline parameter {param!r} of type {types.get(param)}; KFP's driver reads "
            f"{' or '.join(sorted(DRIVER_READS[field]))} there"
        )
        checked.append(param)
    # the GPU limit of the train step's pod, its CPU and memory, its node selector and tolerations, the PVC
    assert {"step_gpus", "step_cpu", "step_memory", "step_node_selector", "gpu_tolerations"} <= set(checked)


def test_the_train_steps_gpu_limit_survives_the_driver() -> None:
    spec, _ = _compiled()
    accelerator = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]["accelerator"]
    (param,) = PLACEHOLDER.findall(accelerator["resourceCount"])
    default = spec["root"]["inputDefinitions"]["parameters"][param]["defaultValue"]
    assert driver_string_value(default) == "0" and driver_string_value("2") == "2"
    assert driver_string_value(2) == ""  # what an int parameter became: no GPU limit at all


def test_the_train_step_takes_no_input_artifact_so_the_launcher_downloads_nothing(tmp_path: Path) -> None:
    spec, _ = _compiled()
    downloads = {
        name: sorted(c.get("inputDefinitions", {}).get("artifacts", {}))
        for name, c in spec["components"].items()
        if name.startswith("comp-") and "executorLabel" in c
    }
    assert downloads["comp-train"] == []
    assert downloads["comp-evaluate"] == ["model"]  # what evaluate reads, it downloads
    # the shards reach the train step as a string: prepare's output parameter `shards`
    shards = spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]["shards"]
    assert shards["taskOutputParameter"] == {"outputParameterKey": "shards", "producerTask": "prepare"}


PARAMETER_TYPES = ("String", "Integer", "Float", "Boolean", "List", "Dict")


def _kfp_inputs(component: Any) -> dict[str, Any]:
    return {n: s for n, s in component.component_spec.inputs.items() if s.type in PARAMETER_TYPES}


def test_the_train_component_is_its_step_config() -> None:
    inputs = _kfp_inputs(train)
    docs = field_docs(TrainStepConfig)
    for f in dataclasses.fields(TrainStepConfig):
        assert f.name in inputs, f"TrainStepConfig.{f.name} is no input of the train component"
        assert inputs[f.name].default == field_default(f), f.name
        assert inputs[f.name].description == " ".join(docs[f.name].split()), f.name
    assert set(inputs) - {f.name for f in dataclasses.fields(TrainStepConfig)} == {"shards"}


def test_a_component_default_that_differs_from_its_config_is_refused_at_import() -> None:
    def bad(shards: str, launcher: str = "local", nodes: int = 1) -> None:
        """Args:
        shards: x
        """

    assert disagreements(bad, TrainStepConfig) == ["launcher: default 'local', TrainStepConfig says 'trainjob'"]
    with pytest.raises(TypeError, match="launcher: default 'local'"):
        from_config(TrainStepConfig)(bad)


def test_every_pipeline_parameter_agrees_with_what_it_feeds() -> None:
    """Each parameter passed straight into a component input has that input's type, default and
    description in the compiled pipeline: no layer restates (or contradicts) another."""
    spec, _ = _compiled()
    root = spec["root"]["inputDefinitions"]["parameters"]
    components = {id(c): n for n, c in COMPONENTS.items()}
    fed = [p for p in PARAMETERS if isinstance(p, From)]
    assert {p.name for p in fed} >= {"config", "launcher", "gpus_per_node", "image", "eval_data", "deploy_gpus"}
    for p in fed:
        want = p.component.component_spec.inputs[p.input]
        got = root[p.name]
        assert got.get("defaultValue") == want.default, f"{p.name} vs {components[id(p.component)]}.{p.input}"
        assert got.get("description") == want.description, f"{p.name} vs {components[id(p.component)]}.{p.input}"
    # and the compiled train task takes each of them from the pipeline parameter of that name
    tasks = spec["root"]["dag"]["tasks"]
    for p in fed:
        task = components[id(p.component)]
        if task in tasks and p.input in tasks[task]["inputs"]["parameters"]:
            assert tasks[task]["inputs"]["parameters"][p.input] == {"componentInputParameter": p.name}


def test_every_pipeline_parameter_has_a_default() -> None:
    """kfp.local (`make demo`) fills each parameter not passed from its default and fails on one without
    (kfp/local/orchestrator/orchestrator_utils.py join_user_inputs_and_defaults: "Unknown value type"), as
    prepare's `overrides=None` once did; on a cluster the UI would ask for it."""
    spec, _ = _compiled()
    missing = [n for n, p in spec["root"]["inputDefinitions"]["parameters"].items() if "defaultValue" not in p]
    assert missing == []


def test_launcher_defaults_agree_everywhere() -> None:
    """The disagreement that was: `kubeflow` in the pipeline, `local` in the component and the step."""
    spec, _ = _compiled()
    pipeline = spec["root"]["inputDefinitions"]["parameters"]["launcher"]["defaultValue"]
    component = train.component_spec.inputs["launcher"].default
    assert pipeline == component == TrainStepConfig().launcher == "trainjob"
    assert kfp_type(list[str]) is list and kfp_type(dict[str, str] | None) is dict
