"""evaluate: score the trained decoder against its baseline; Metrics, an HTML and a Markdown report."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Markdown, Metrics, Model, Output

from asymvae_components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    metrics: Output[Metrics],
    report: Output[HTML],
    table: Output[Markdown],
    results: Output[Artifact],
    data: str = "builtin:demo?seed=1",
    baseline: str = "",
    resolution: int = 64,
    max_images: int = 0,
    lpips: str = "shift_tolerant",
    s3_endpoint: str = "",
    s3_use_https: bool = False,
):
    """Decode held-out images with the baseline's and the trained decoder; log every mean as a metric.

    Args:
        model: Output of the train component.
        metrics: Every mean metric as `case/decoder/metric` (e.g. `masked/asymmetric/pre_error`), plus
            `pre_error_ratio`.
        report: The table and the comparison grid in one HTML page (the grid inline, base64 PNG): the
            report.html `asymvae eval` writes.
        table: The table as Markdown.
        results: The report folder: metrics.json (with per-image values), metrics.md, grid.png, report.html.
        data: Held-out images: a prepared dataset (`s3://` prefix or manifest of `asymvae prepare`: its val
            split with the stored masks), or a folder, dataset, `builtin:demo?seed=1`.
        baseline: The baseline VAE (default: the base the model was trained on, recorded by train).
        resolution: Centre-crop side in pixels (a multiple of 8).
        max_images: Score only the first N images (0: all).
        lpips: `shift_tolerant` (offline weights), `standard` or `off`.
        s3_endpoint: Object-store endpoint (host:port) for `s3://` data; empty: the environment's.
        s3_use_https: TLS to the object store.
    """
    from pathlib import Path

    from asymvae.steps.evaluate import evaluate_step, flat_metrics, report_html
    from asymvae.steps.train import baseline_of
    from asymvae.steps.uris import use_store_endpoint

    use_store_endpoint(s3_endpoint, s3_use_https)
    base = baseline or baseline_of(model.path, model.metadata.get("baseline", ""))
    result = evaluate_step(model.path, base, data, results.path, resolution, max_images, lpips)
    for name, value in flat_metrics(result.summary).items():
        metrics.log_metric(name, value)
    Path(report.path).write_text(report_html(result))
    Path(table.path).write_text(Path(result.files["markdown"]).read_text())
    results.metadata["pre_error_ratio"] = result.summary.get("pre_error_ratio")
    results.metadata["images"] = result.summary.get("images")
