"""`train.mirror`: a run's checkpoints and export in an object store, so that no shared volume is needed.

Real runs on the tiny demo, with the mirror in a local folder and in a real S3 server (SeaweedFS): the mirror
receives complete checkpoints and the export, a run on an empty disk resumes from it, an upload that was cut
is ignored, objects asymvae did not write are refused, and two "nodes" with a disk each train together.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from asymvae.config import save_yaml
from asymvae.storage import StorageError
from asymvae.training.checkpoint import MARKER, RESUMES_NAME
from asymvae.training.mirror import MIRROR_MARK, MirrorError, RunMirror, fetch_export
from asymvae.training.run import train
from tests.support.faults import ROOT, asymvae, one_line_error
from tests.support.ports import free_port
from tests.support.tiny_models import tiny_config, weights

STEP2, STEP4 = "checkpoints/step-00000002", "checkpoints/step-00000004"


def _files(root: Path) -> dict[str, bytes]:
    """Every file below `root` but asymvae's hidden marks, by relative path."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and "/." not in f"/{p.relative_to(root)}"
    }


def _resumed_at(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "logs" / RESUMES_NAME).read_text().splitlines()]


@pytest.fixture(scope="module")
def mirrored(base_vae_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished 4-step run (checkpoints at 2 and 4) and its mirror in a local folder."""
    root = tmp_path_factory.mktemp("mirrored")
    out, mirror = root / "run", root / "mirror"
    assert train(tiny_config(base_vae_dir, out, f"train.mirror={mirror}")).step == 4
    return out, mirror


def _copy(mirror: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "mirror"
    shutil.copytree(mirror, copy)
    return copy


def test_the_mirror_gets_every_complete_checkpoint_and_the_export(mirrored):
    out, mirror = mirrored
    assert (mirror / MIRROR_MARK).is_file()
    for step in (STEP2, STEP4):  # the same files, the same marker
        assert _files(mirror / step) == _files(out / step)
    local_export = _files(out / "step4")
    got = _files(mirror / "step4")
    marker = json.loads(got.pop(MARKER))
    assert got == local_export and set(marker["files"]) == set(local_export) and marker["step"] == 4
    # the TensorBoard logs, closed before the upload, for a Kubeflow TensorBoard to read from the store
    logs = _files(out / "logs" / "tensorboard")
    assert logs and _files(mirror / "logs" / "tensorboard") == logs


def test_a_run_on_an_empty_disk_resumes_from_the_mirror_to_the_same_weights(mirrored, base_vae_dir, tmp_path):
    first, mirror = mirrored
    mirror = _copy(mirror, tmp_path)
    local = tmp_path / "local"  # the same resume from the run's own disk
    shutil.copytree(first, local)
    train(tiny_config(base_vae_dir, local, "train.max_steps=6"), resume=True)

    out = tmp_path / "empty"  # another pod, another disk: nothing of the first run is here
    result = train(tiny_config(base_vae_dir, out, f"train.mirror={mirror}", "train.max_steps=6"), resume=True)
    assert result.step == 6 and _resumed_at(out) == [4]
    rows = [json.loads(line)["step"] for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert rows == [5, 6]
    expected, got = weights(local / "step6"), weights(out / "step6")
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    # the mirror keeps the newest train.keep_checkpoints=2, and holds the new export
    assert sorted(p.name for p in (mirror / "checkpoints").iterdir()) == ["step-00000004", "step-00000006"]
    assert (mirror / "step6" / MARKER).is_file()


def test_fetch_export_takes_the_newest_complete_export_and_says_when_there_is_none(mirrored, tmp_path):
    out, mirror = mirrored
    found = fetch_export(str(mirror), tmp_path / "model")
    assert found == tmp_path / "model" / "step4"
    assert _files(found) == _files(out / "step4")

    cut = _copy(mirror, tmp_path)
    (cut / "step4" / MARKER).unlink()  # an export upload that was cut: its marker goes up last
    with pytest.raises(MirrorError, match="holds no complete export"):
        fetch_export(str(cut), tmp_path / "none")
    shutil.copy(mirror / "step4" / MARKER, cut / "step4" / MARKER)
    (cut / "step4" / "config.yaml").write_text("changed")
    with pytest.raises(MirrorError, match=r"step4 in the mirror is damaged: config.yaml is .* bytes"):
        fetch_export(str(cut), tmp_path / "damaged")


def test_a_checkpoint_whose_upload_was_cut_is_ignored(mirrored, base_vae_dir, tmp_path):
    out, mirror = mirrored
    mirror = _copy(mirror, tmp_path)
    shutil.rmtree(mirror / STEP4)
    # The step-4 upload is cut before its last file: a real upload, broken by a file that went away.
    local = tmp_path / "local" / "step-00000004"
    shutil.copytree(out / STEP4, local)
    (local / "trainer_state.json").unlink()
    with pytest.raises(FileNotFoundError):
        RunMirror(str(mirror)).upload_checkpoint(local)
    assert (mirror / STEP4 / "model.safetensors").is_file() and not (mirror / STEP4 / MARKER).exists()

    fresh = tmp_path / "fresh"
    assert train(tiny_config(base_vae_dir, fresh, f"train.mirror={mirror}"), resume=True).step == 4
    assert _resumed_at(fresh) == [2]
    assert _files(mirror / STEP4) == _files(fresh / STEP4)  # uploaded whole this time, marker and all

    # Cut again, on a disk that kept the checkpoint: the resume's first step uploads it whole.
    (mirror / STEP4 / MARKER).unlink()
    RunMirror(str(mirror)).sync(fresh, keep=2, upload=True)
    assert _files(mirror / STEP4) == _files(fresh / STEP4)


def test_a_mirror_holding_objects_asymvae_did_not_write_is_refused_at_start(mirrored, base_vae_dir, tmp_path):
    _, mirror = mirrored
    theirs = tmp_path / "theirs"
    (theirs / "checkpoints").mkdir(parents=True)
    (theirs / "checkpoints" / "notes.txt").write_text("mine")
    cfg = tiny_config(base_vae_dir, tmp_path / "run", f"train.mirror={theirs}")
    save_yaml(cfg, tmp_path / "run.yaml")
    line = one_line_error(asymvae("train", str(tmp_path / "run.yaml")), "train")
    assert f"{theirs}/checkpoints/notes.txt was not written by asymvae" in line and "Fix:" in line
    assert (theirs / "checkpoints" / "notes.txt").read_text() == "mine"
    assert not (theirs / MIRROR_MARK).exists() and not (tmp_path / "run" / "checkpoints").exists()

    for foreign in (f"{STEP4}/extra.bin", "other/data.bin", MIRROR_MARK):  # in a mirror asymvae wrote
        copy = _copy(mirror, tmp_path / foreign.replace("/", "_"))
        (copy / foreign).parent.mkdir(parents=True, exist_ok=True)
        (copy / foreign).write_bytes(b"theirs")
        with pytest.raises(MirrorError, match=f"{foreign} was not written by asymvae"):
            train(tiny_config(base_vae_dir, tmp_path / "run2", f"train.mirror={copy}"), resume=True)
        assert (copy / foreign).read_bytes() == b"theirs"


def test_a_run_mirrors_to_s3_and_a_run_on_an_empty_disk_resumes_from_it(s3_env, base_vae_dir, tmp_path):
    mirror = f"s3://asymvae/mirror-{uuid.uuid4().hex[:8]}"
    first = tmp_path / "first"
    assert train(tiny_config(base_vae_dir, first, f"train.mirror={mirror}", "train.max_steps=2")).step == 2
    client, prefix = s3_env._client(), mirror.removeprefix("s3://asymvae/")
    keys = {
        o.object_name[len(prefix) + 1 :] for o in client.list_objects("asymvae", prefix=f"{prefix}/", recursive=True)
    }
    assert {MIRROR_MARK, f"{STEP2}/{MARKER}", f"{STEP2}/model.safetensors", f"step2/{MARKER}"} <= keys

    out = tmp_path / "empty"
    result = train(tiny_config(base_vae_dir, out, f"train.mirror={mirror}"), resume=True)
    assert result.step == 4 and _resumed_at(out) == [2]
    found = fetch_export(mirror, tmp_path / "model")
    assert found.name == "step4" and _files(found) == _files(out / "step4")

    with pytest.raises(StorageError, match="the bucket does not exist"):
        train(tiny_config(base_vae_dir, tmp_path / "nobucket", "train.mirror=s3://no-such-bucket/run"))
    assert not (tmp_path / "nobucket" / "checkpoints").exists()


def _two_nodes(cfg_file: Path, outs: list[Path]) -> list[subprocess.CompletedProcess]:
    """`asymvae train --resume` as two torchrun nodes of one process each, each with its own output folder."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "ASYMVAE_LOG_LEVEL": "INFO"}  # INFO on rank 1 too
    procs = []
    for rank, out in enumerate(outs):
        torchrun = ["-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={rank}", "--nproc_per_node=1"]
        torchrun += ["--master_addr=127.0.0.1", f"--master_port={port}"]
        args = ["-m", "asymvae", "train", str(cfg_file), "--output", str(out), "--resume"]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        procs.append(subprocess.Popen([sys.executable, *torchrun, *args], cwd=ROOT, env=env, **pipes))
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=600), *p.communicate()) for p in procs]


@pytest.mark.slow  # two runs of two torchrun nodes each: ~1-2 min on 2 cores
def test_two_nodes_with_a_disk_each_checkpoint_and_resume_through_the_mirror(base_vae_dir, tmp_path):
    mirror = tmp_path / "mirror"
    outs = [tmp_path / "node0", tmp_path / "node1"]
    cfg = tiny_config(base_vae_dir, outs[0], f"train.mirror={mirror}", "train.max_steps=2")
    save_yaml(cfg, tmp_path / "two.yaml")
    for run in _two_nodes(tmp_path / "two.yaml", outs):
        assert run.returncode == 0, run.stderr[-3000:]
    # rank 1 wrote nothing on its own disk: rank 0 holds its random state in the checkpoint
    assert {"rng-0.json", "rng-1.json"} <= {p.name for p in (mirror / STEP2).iterdir()}
    assert not (outs[1] / "checkpoints").exists()

    save_yaml(tiny_config(base_vae_dir, outs[0], f"train.mirror={mirror}"), tmp_path / "two.yaml")
    runs = _two_nodes(tmp_path / "two.yaml", outs)
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    assert f"checkpoint {outs[1] / STEP2} downloaded from the mirror" in runs[1].stderr
    assert f"resumed from {outs[1] / STEP2} at step 2" in runs[1].stderr
    assert "weights identical on all 2 ranks" in runs[0].stderr
    assert (mirror / "step4" / MARKER).is_file()
