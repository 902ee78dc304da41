"""The evaluate component's function: metrics logged per number, HTML with the grid inline, Markdown table."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

from kfp.dsl import HTML, Artifact, Markdown, Metrics, Model

from asymvae.evaluation.html import markdown_to_html
from asymvae_components.evaluate.component import evaluate


def test_evaluates_against_the_recorded_baseline(tmp_path: Path, asym_export_dir: Path, base_vae_dir: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(asym_export_dir, model_dir)
    shutil.copytree(base_vae_dir / "vae", model_dir / "baseline" / "vae")  # as the train component leaves it
    model = Model(name="model", uri=str(model_dir), metadata={"baseline": "baseline"})
    metrics = Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    report = HTML(name="report", uri=str(tmp_path / "report"))
    table = Markdown(name="table", uri=str(tmp_path / "table"))
    results = Artifact(name="results", uri=str(tmp_path / "results"))
    evaluate.python_func(
        model=model,
        metrics=metrics,
        report=report,
        table=table,
        results=results,
        data="builtin:demo?seed=1",
        resolution=32,
        max_images=3,
        lpips="off",
    )
    m = metrics.metadata
    assert m["masked/baseline/pre_error"] > 0 and m["masked/asymmetric/pre_error"] > 0
    assert {"masked/baseline/psnr_preserved", "full_mask/asymmetric/ssim", "pre_error_ratio"} <= set(m)
    assert not any("lpips" in k for k in m)  # switched off: not logged as NaN
    html = Path(report.path).read_text()
    png = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', html).group(1))
    assert png == (tmp_path / "results" / "grid.png").read_bytes()
    assert html == (tmp_path / "results" / "report.html").read_text()  # the page `asymvae eval` writes
    assert Path(table.path).read_text() == (tmp_path / "results" / "metrics.md").read_text()
    assert results.metadata["images"] == 3


def test_markdown_to_html_table() -> None:
    out = markdown_to_html("| a | b |\n|---|---|\n| 1 | <x> |\n\nratio: **0.5**, `demo`\n")
    assert "<tr><th>a</th><th>b</th></tr>" in out
    assert "<td>&lt;x&gt;</td>" in out  # escaped
    assert "<p>ratio: <strong>0.5</strong>, <code>demo</code></p>" in out
