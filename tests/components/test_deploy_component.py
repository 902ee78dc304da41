"""The deploy component's InferenceService: built purely, valid against KServe's real CRD (closed objects)."""

from __future__ import annotations

import pytest

from asymvae.cluster.crd import schema_errors, validate_custom_object
from asymvae.cluster.inferenceservice import InferenceServiceSpec, build_inferenceservice
from tests.k8s_schemas import INFERENCESERVICE_CRD


@pytest.mark.parametrize("gpus", [0, 1])
def test_inferenceservice_matches_the_crd(gpus: int) -> None:
    obj = build_inferenceservice(
        InferenceServiceSpec(name="asymvae-decoder", storage_uri="s3://mlpipeline/v2/artifacts/x/exported", gpus=gpus)
    )
    validate_custom_object(obj, INFERENCESERVICE_CRD)
    model = obj["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "onnx"} and model["runtime"] == "kserve-tritonserver"
    assert model["storageUri"] == "s3://mlpipeline/v2/artifacts/x/exported"
    assert ("nvidia.com/gpu" in model["resources"]["limits"]) == bool(gpus)
    assert obj["spec"]["predictor"]["serviceAccountName"] == "asymvae-serving"


def test_a_misspelt_field_fails_the_schema() -> None:
    obj = build_inferenceservice(InferenceServiceSpec(name="d", storage_uri="s3://b/p"))
    obj["spec"]["predictor"]["model"]["storageURI"] = obj["spec"]["predictor"]["model"].pop("storageUri")
    assert any("storageURI" in e for e in schema_errors(obj, INFERENCESERVICE_CRD))


def test_spec_checks() -> None:
    with pytest.raises(ValueError, match="DNS label"):
        InferenceServiceSpec(name="Bad_Name", storage_uri="s3://b/p")
    with pytest.raises(ValueError, match="KServe can download"):
        InferenceServiceSpec(name="d", storage_uri="/local/path")  # a kfp.local artifact cannot be served
