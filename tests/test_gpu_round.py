"""benchmarks/gpu_round.sh, the one GPU run of every speed measurement, at toy size on the CPU (`TINY=1`): each
part runs and its arms compute what the baselines compute. No speed claim: the figures come from a GPU run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The script's output folder and its printed output (about 1.5 min on 2 cores, most of it inductor)."""
    out = tmp_path_factory.mktemp("gpu_round")
    env = {**os.environ, "TINY": "1", "PYTHON": sys.executable, "OUT": str(out)}
    run = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_round.sh")], capture_output=True, text=True, env=env, timeout=900
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "gpu_round: done" in run.stdout
    return out, run.stdout


def _json(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text())


@pytest.mark.slow
def test_training_part_runs_both_arms_with_the_same_losses(reports: tuple[Path, str]) -> None:
    out, stdout = reports
    shape = _json(out, "train_throughput.json")["shapes"][0]
    ours = shape["arms"]["ours"]
    assert shape["baseline"]["img_per_s"] > 0 and ours["img_per_s"] > 0
    assert shape["tflop_per_step"] > 0
    assert ours["loss_agreement"]["pass"], ours["loss_agreement"]
    assert len(ours["losses"]) == len(shape["baseline"]["losses"]) == 6
    assert "ours / baseline" in stdout
    assert {"gpu.txt", "train.log", "decode.log", "x2.log"} <= {p.name for p in out.iterdir()}


@pytest.mark.slow
def test_x2_part_runs_the_reference_recipe_with_and_without_checkpointing(reports: tuple[Path, str]) -> None:
    """The reference engine's recipe (L2 + 0.1 LPIPS(alex), clipping, posterior mode): ours and ours with gradient
    checkpointing run next to its loop and train alike."""
    arms = _json(reports[0], "train_throughput_reference-x2.json")["shapes"][0]["arms"]
    assert set(arms) == {"ours", "checkpointing"}
    for arm in arms.values():
        assert arm["img_per_s"] > 0 and arm["loss_agreement"]["mean_rel"] < 0.02, arm["loss_agreement"]
    assert arms["checkpointing"]["settings"]["checkpointing"] is True


@pytest.mark.slow
def test_decode_part_keeps_parity_in_every_arm_and_checks_the_onnx_graph(reports: tuple[Path, str]) -> None:
    report = _json(reports[0], "decode_throughput.json")
    assert report["baseline"]["2"]["img_per_s"] > 0
    for name in ("eager", "channels_last", "compile"):
        arm = report["arms"][name]["batches"]["2"]
        assert arm["pass"] and arm["max_abs_vs_fp32"] <= arm["tolerance"], (name, arm)
    assert report["arms"]["eager"]["batches"]["2"]["max_abs_vs_baseline"] == 0
    assert report["arms"]["compile"]["batches"]["2"]["first_call_s"] > 0
    onnx = report["arms"]["onnx"]
    assert onnx["cpu_parity"] and all(c["pass"] for c in onnx["cpu_parity"])
    assert "CPUExecutionProvider" in onnx["providers"] and onnx["gpu"].startswith("not measured")
