"""benchmarks/serve_throughput.py, the serving overhead benchmark, at toy size (`--tiny`): every part runs against
real `asymvae serve` subprocesses and reports what it promises. No speed claim: the figures come from a full run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("kserve") is None:
    pytest.skip("the serve extra (pip install 'asymvae[serve]') is not installed", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    """The tiny run's JSON and printed output (three servers started and stopped; under a minute on 2 cores)."""
    out = tmp_path_factory.mktemp("serve_bench") / "serve_throughput.json"
    argv = [sys.executable, str(ROOT / "benchmarks" / "serve_throughput.py"), "--tiny", "--out", str(out)]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=ROOT / "benchmarks")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text()), run.stdout


@pytest.mark.integration
def test_it_records_the_machine_the_date_and_a_model_with_random_weights(report: tuple[dict, str]) -> None:
    r, stdout = report
    assert r["date"][:4].isdigit() and r["machine"]["cores"] >= 1 and r["machine"]["versions"]["kserve"]
    assert r["model"]["built"] == "toy" and "random" in r["model"]["weights"] and r["model"]["decoder_parameters"] > 0
    assert r["setup"]["res"] == 64 and r["setup"]["large"] == 128
    assert "random weights" in stdout and "done in" in stdout


@pytest.mark.integration
def test_served_images_equal_the_in_process_decode_and_both_sides_are_timed(report: tuple[dict, str]) -> None:
    lat, thr = report[0]["latency"], report[0]["throughput"]
    assert lat["max_abs_diff_served_vs_in_process"] <= 1e-5
    for side in ("served", "in_process"):
        assert lat[side]["n"] == 2 and 0 < lat[side]["median_ms"] <= lat[side]["p90_ms"]
    assert set(lat["overhead"]) == {"median_ratio", "median_ms", "p90_ratio"}
    assert thr["images"] == 2 and thr["served_img_per_s"] > 0 and thr["in_process_img_per_s"] > 0
    assert thr["server_decodes"] >= 1 and thr["finite"]


@pytest.mark.integration
def test_json_bodies_are_several_times_the_binary_ones(report: tuple[dict, str]) -> None:
    pay = report[0]["payloads"]
    binary, text = pay["binary"], pay["json"]
    assert pay["raw_request_tensor_bytes"] < binary["request_bytes"] < pay["raw_request_tensor_bytes"] + 2000
    assert pay["raw_answer_tensor_bytes"] < binary["answer_bytes"] < pay["raw_answer_tensor_bytes"] + 2000
    assert text["request_bytes"] > 3 * binary["request_bytes"] and text["answer_bytes"] > 3 * binary["answer_bytes"]
    assert pay["json_over_binary"]["request_bytes"] == text["request_bytes"] / binary["request_bytes"]


@pytest.mark.integration
def test_each_large_decode_runs_on_its_own_server_tiled_and_whole(report: tuple[dict, str]) -> None:
    mem = report[0]["memory"]
    assert mem["tiled"]["server_options"][:2] == ["--tile-above", "64"]
    assert mem["whole"]["server_options"] == ["--tile-above", "128"]
    for mode in ("tiled", "whole"):
        m = mem[mode]
        assert "failed" not in m, m
        assert m["peak_rss"] >= m["peak_rss_after_load"] > 0 and m["growth"] == m["peak_rss"] - m["peak_rss_after_load"]
    assert mem["max_abs_diff_tiled_vs_whole"] > 1e-3  # the tiled server did decode in tiles
