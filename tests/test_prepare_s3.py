"""Prepare into a real S3 server (SeaweedFS, started by the suite) and train from it; interruption and corruption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from minio import Minio

from asymvae.data.manifest import MANIFEST_NAME, load_manifest
from asymvae.data.prepare import PrepareConfig, prepare
from asymvae.data.shards import iter_split
from asymvae.storage import ChecksumError, open_store
from asymvae.training.run import train
from tests.support.tiny_models import tiny_config


def _prefix() -> str:
    return f"s3://asymvae/{uuid.uuid4().hex[:10]}"


def test_prepare_to_s3_then_train_from_s3(s3_env, base_vae_dir, tmp_path):
    out = _prefix() + "/demo"
    cfg = PrepareConfig(max_side=64, min_side=16, val_fraction=0.2, shard_max_bytes=65536)
    result = prepare("builtin:demo?count=24&size=64", out, cfg, progress=False)
    assert result.manifest_uri == f"{out}/{MANIFEST_NAME}" and len(result.manifest.shards) >= 2
    again = prepare("builtin:demo?count=24&size=64", out, cfg, progress=False)
    assert again.up_to_date and again.processed == 0
    val = list(iter_split(result.manifest_uri, "val"))
    assert len(val) == result.manifest.samples("val") and all(s.mask is not None for s in val)

    run = train(tiny_config(base_vae_dir, tmp_path / "run", f"data.shards={out}", "data.num_workers=2"))
    assert run.step == 4 and (run.export / "vae" / "config.json").is_file()
    rows = (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 4 and all('"perf/data_wait_pct"' in r for r in rows)


def test_corrupted_shard_in_s3_is_caught_by_its_checksum(s3_env, base_vae_dir, tmp_path):
    out = _prefix()
    result = prepare("builtin:demo?count=8&size=64", out, PrepareConfig(min_side=16, val_fraction=0.0), progress=False)
    shard = result.manifest.shards[0]
    store = open_store(out)
    data = bytearray(store.get(shard.name))
    data[1500] ^= 0x01
    store.put(shard.name, bytes(data))
    with pytest.raises(ChecksumError, match="corrupt"):
        list(iter_split(out, "train"))
    with pytest.raises(ChecksumError):
        train(tiny_config(base_vae_dir, tmp_path / "run", f"data.shards={out}/manifest.json"))


def test_prepare_cli_reports_an_unreachable_endpoint(s3_env, monkeypatch, capsys):
    from asymvae.cli import main
    from asymvae.storage.local_s3 import free_ports

    port = free_ports(1)[0]
    monkeypatch.setenv("S3_ENDPOINT", f"127.0.0.1:{port}")
    with pytest.raises(SystemExit) as e:
        main(["prepare", "builtin:demo", "--out", "s3://asymvae/x"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"127.0.0.1:{port}" in err and "'asymvae'" in err
    assert s3_env.secret_key not in err


def _objects(server, prefix: str) -> dict[str, int]:
    client = Minio(f"127.0.0.1:{server.s3_port}", server.access_key, server.secret_key, secure=False)
    return {o.object_name: o.size for o in client.list_objects("asymvae", prefix=prefix + "/", recursive=True)}


def test_an_upload_killed_halfway_leaves_the_old_manifest_and_a_rerun_completes(s3_env, tmp_path):
    key = uuid.uuid4().hex[:10]
    out = f"s3://asymvae/{key}"
    source = "builtin:demo?count=400&size=128"
    sets = ["--prepare.min-side=16", "--prepare.shard-max-bytes=65536", "--prepare.workers=2"]
    # An older, complete dataset at the same place (other settings).
    old = prepare(source, out, PrepareConfig(min_side=16, max_side=32, workers=2), progress=False)

    cmd = [sys.executable, "-m", "asymvae", "prepare", source, "--out", out, *sets]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            new = [k for k in _objects(s3_env, key) if "/shards-" in k and old.manifest.fingerprint[:16] not in k]
            if sum(k.endswith(".json") for k in new) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "prepare finished before it could be killed: make the source bigger"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()

    # The manifest is still the old one and every shard it lists is whole.
    manifest, _ = load_manifest(out)
    assert manifest.fingerprint == old.manifest.fingerprint
    assert sum(1 for _ in iter_split(out, "train")) == old.manifest.samples("train")

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "kept from an earlier run" in done.stdout
    manifest, _ = load_manifest(out)
    assert (
        manifest.fingerprint != old.manifest.fingerprint and manifest.samples("train") + manifest.samples("val") == 400
    )
    assert sum(1 for _ in iter_split(out, "val")) == manifest.samples("val")
