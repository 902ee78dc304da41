"""export: package the trained model as a diffusers folder, ONNX, or a Triton model repository."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from asymvae_components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def export(
    model: Input[Model],
    exported: Output[Model],
    results: Input[Artifact] = None,
    format: str = "diffusers",
    name: str = "asymvae_decoder",
):
    """Export `model` in `format`; the evaluation's table goes into the model card.

    Args:
        model: Output of the train component.
        exported: The export. For `triton` it is the model repository root (`<name>/config.pbtxt`,
            `<name>/1/model.onnx`): the `storageUri` KServe's Triton runtime wants.
        results: Output `results` of the evaluate component (its metrics.json feeds the card); optional.
        format: `diffusers`, `onnx` or `triton`.
        name: Model name (the Triton model folder; the card's title).
    """
    from pathlib import Path

    from asymvae.export.config import ExportConfig
    from asymvae.export.run import export_model
    from asymvae.steps.uris import store_uri

    card_eval = None
    if results is not None and (Path(results.path) / "metrics.json").is_file():
        card_eval = str(Path(results.path) / "metrics.json")
    result = export_model(ExportConfig(model=model.path, format=format, out=exported.path, name=name, eval=card_eval))
    exported.metadata.update({"format": format, "name": name, "files": sorted(result.files)})
    exported.metadata["storage_uri"] = store_uri(exported.uri)
