"""Fault injection with real processes and real files: what a user's data, disk and cluster throw at asymvae.

Each test breaks something the way the world does (a link loop, chmod, a truncated file, a full disk, a
stopped S3 server) and runs the `asymvae` command on it: the user must get one line naming what is wrong
and exit status 2, never a traceback; nothing may be lost or skipped silently; whatever can be repaired is
repaired by running the command again. docs/faults.md tabulates these tests.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from asymvae.config import save_yaml
from asymvae.data.manifest import MANIFEST_NAME, Manifest, load_manifest
from asymvae.data.prepare import PrepareConfig, prepare
from asymvae.data.shards import iter_split
from asymvae.data.stream_plan import Plan
from asymvae.storage.ownership import own_folder
from asymvae.training.checkpoint import complete_checkpoints, write_marker
from asymvae.training.run import train
from tests.conftest import tiny_config
from tests.faults import ROOT, asymvae, modes_bind, one_line_error, small_disk, with_umask
from tests.test_train import weights

DEMO = "builtin:demo?count=64&size=48"
DIFFUSERS = ["--format", "diffusers", "--out"]
SMALL = ["--set", "prepare.min_side=16", "--set", "prepare.max_side=48", "--set", "prepare.workers=1"]


def _png(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(path)


def _demo_dataset(out: Path, **settings) -> Manifest:
    cfg = PrepareConfig(min_side=16, max_side=48, shard_max_bytes=65536, val_fraction=0.3, workers=1, **settings)
    return prepare(DEMO, str(out), cfg, progress=False).manifest


# ----------------------------------------------------------------------------------------------------------
# The source: every entry that cannot be read is named and counted


@pytest.fixture
def broken_folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Nine good images (one with a name that is not UTF-8), and one of each way a folder entry can be
    unreadable (with the reason expected)."""
    root = tmp_path / "photos"
    (root / "trip").mkdir(parents=True)
    for i in range(8):
        _png(root / ("trip" if i % 2 else ".") / f"img{i}.png", i)
    _png(Path(os.fsdecode(os.fsencode(root) + b"/caf\xe9.png")), 8)  # a Latin-1 name: not UTF-8, still an image
    (root / "loop1.jpg").symlink_to("loop2.jpg")
    (root / "loop2.jpg").symlink_to("loop1.jpg")
    (root / "gone.png").symlink_to("deleted.png")
    (root / "trip" / "again").symlink_to("..")
    os.mkfifo(root / "pipe.jpg")
    _png(root / "secret.png", 99)
    (root / "secret.png").chmod(0)
    (root / "locked").mkdir()
    _png(root / "locked" / "inside.png", 98)
    (root / "locked").chmod(0)
    expected = {
        "loop1.jpg": "symbolic link loop",
        "loop2.jpg": "symbolic link loop",
        "gone.png": "broken link to deleted.png",
        "trip/again": "a link loop",
        "pipe.jpg": "not a regular file",
        "secret.png": "Permission denied",
        "locked": "cannot list folder: Permission denied",
    }
    yield root, expected
    (root / "locked").chmod(0o755)


def test_prepare_names_every_entry_it_cannot_read_and_counts_it(broken_folder, tmp_path):
    root, expected = broken_folder
    out = tmp_path / "prepared"
    refused = asymvae("prepare", str(root), "--out", str(out), *SMALL, preexec=modes_bind())
    assert "too many unusable images: 7 of 16 > prepare.max_bad_share" in one_line_error(refused, "prepare")
    assert not (out / MANIFEST_NAME).exists()

    run = asymvae(
        "prepare", str(root), "--out", str(out), *SMALL, "--set", "prepare.max_bad_share=0.5", preexec=modes_bind()
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for name, reason in expected.items():
        assert f"{name}: " in run.stdout and reason in run.stdout.split(f"{name}: ", 1)[1].splitlines()[0]
    listed = (out / "bad-images.tsv").read_text().splitlines()[1:]
    assert sorted(row.split("\t")[0] for row in listed) == sorted(expected)
    manifest, _ = load_manifest(str(out))
    assert manifest.bad["count"] == len(expected) and manifest.source["images"] == 9 + len(expected)
    # every count of the manifest is what a reader of the dataset yields
    for split in ("train", "val"):
        assert sum(1 for _ in iter_split(str(out), split)) == manifest.samples(split)
    assert manifest.samples("train") + manifest.samples("val") == 9
    assert "caf\\xe9.png" in {s.meta["source"] for split in ("train", "val") for s in iter_split(str(out), split)}


def test_an_unreadable_source_folder_is_one_line(tmp_path):
    root = tmp_path / "closed"
    root.mkdir()
    _png(root / "a.png", 0)
    root.chmod(0)
    try:
        run = asymvae("prepare", str(root), "--out", str(tmp_path / "out"), *SMALL, preexec=modes_bind())
    finally:
        root.chmod(0o755)
    assert "cannot list the folder (Permission denied)" in one_line_error(run, "prepare")


def test_a_second_prepare_into_a_held_folder_is_one_line_naming_the_holder(tmp_path):
    out = tmp_path / "prepared"
    with own_folder(out, "the first prepare"):
        second = asymvae("prepare", DEMO, "--out", str(out), *SMALL)
    line = one_line_error(second, "prepare")
    assert f"{out} is in use by the first prepare (pid {os.getpid()} on " in line
    assert not (out / MANIFEST_NAME).exists() and [p.name for p in out.iterdir()] == [".asymvae.lock"]


def test_prepare_never_overwrites_a_manifest_asymvae_did_not_write(tmp_path):
    out = tmp_path / "project"
    out.mkdir()
    theirs = '{"name": "my project", "version": 3}'
    (out / MANIFEST_NAME).write_text(theirs)
    run = asymvae("prepare", DEMO, "--out", str(out), *SMALL)
    line = one_line_error(run, "prepare")
    assert f"{out / MANIFEST_NAME} exists and was not written by asymvae (format None" in line and "Fix:" in line
    assert (out / MANIFEST_NAME).read_text() == theirs


def test_over_the_bad_share_limit_prepare_lists_every_bad_image(tmp_path):
    root = tmp_path / "mostly_bad"
    root.mkdir()
    for i in range(10):
        _png(root / f"good{i:02d}.png", i)
    for i in range(30):
        (root / f"bad{i:02d}.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    run = asymvae("prepare", str(root), "--out", str(out), *SMALL, "--set", "prepare.workers=2")
    assert one_line_error(run, "prepare").endswith(
        "too many unusable images: 30 of 40 > prepare.max_bad_share=0.05 (no manifest written)."
    )
    assert f"... and 10 more (all listed in {out / 'bad-images.tsv'})" in run.stderr
    rows = (out / "bad-images.tsv").read_text().splitlines()
    assert rows[0] == "name\tkind\treason" and sorted(r.split("\t")[0] for r in rows[1:]) == [
        f"bad{i:02d}.png" for i in range(30)
    ]
    assert not (out / MANIFEST_NAME).exists()


# ----------------------------------------------------------------------------------------------------------
# A damaged dataset: named by the readers, rebuilt by prepare


@pytest.mark.slow  # three CLI runs with a model: ~90 s on a busy 2-core machine
def test_damaged_shards_are_named_then_rebuilt_by_running_prepare_again(asym_export_dir, base_vae_dir, tmp_path):
    out = tmp_path / "prepared"
    manifest = _demo_dataset(out)
    train_shards = manifest.shards_of("train")
    assert len(train_shards) >= 3
    corrupt, truncated, deleted = (out / s.name for s in train_shards[:3])
    data = bytearray(corrupt.read_bytes())
    data[2000:2004] = b"XXXX"
    corrupt.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:1000])
    deleted.unlink()
    val = manifest.shards_of("val")[0]
    (out / val.name).write_bytes((out / val.name).read_bytes()[:-512])

    common = ["--resolution", "32", "--lpips", "off", "--grid-samples", "0", "--no-progress"]
    evaluate = ("eval", str(asym_export_dir), "--baseline", str(base_vae_dir), "--data", str(out), *common)
    run = asymvae(*evaluate, "--out", str(tmp_path / "eval"))
    line = one_line_error(run, "eval")
    assert str(out / val.name) in line and "is corrupt" in line and "re-run `asymvae prepare`" in line

    prepare = ("prepare", DEMO, "--out", str(out), *SMALL)
    prepare += ("--set", "prepare.shard_max_bytes=65536", "--set", "prepare.val_fraction=0.3")
    again = asymvae(*prepare)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 missing or damaged shards rebuilt" in again.stdout
    for shard in (*train_shards[:3], val):
        assert f"{out / shard.name} is damaged" in again.stderr
    rebuilt, _ = load_manifest(str(out))
    assert [(s.name, s.sha256) for s in rebuilt.shards] == [(s.name, s.sha256) for s in manifest.shards]
    ok = asymvae(*evaluate, "--out", str(tmp_path / "eval"))
    assert ok.returncode == 0, ok.stderr[-3000:]
    done = asymvae(*prepare)
    assert "Up to date" in done.stdout and "checked against their sha256" in done.stdout


def _drop_image_of_first_record(out: Path, manifest: Manifest, shard_name: str) -> str:
    """Rewrite a shard without the image member of its first record (and its manifest entry to match, so
    checksums pass: a shard some other tool wrote); returns that record's key."""
    path = out / shard_name
    rebuilt = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(path.read_bytes())) as source,
        tarfile.open(fileobj=rebuilt, mode="w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        members = source.getmembers()
        key = members[0].name.split(".", 1)[0]
        for m in members:
            if not (m.name.startswith(key + ".") and m.name.endswith((".jpg", ".png")) and "mask" not in m.name):
                tar.addfile(m, source.extractfile(m))
    data = rebuilt.getvalue()
    path.write_bytes(data)
    manifest.shards = [
        type(s)(s.name, s.split, s.samples, len(data), hashlib.sha256(data).hexdigest()) if s.name == shard_name else s
        for s in manifest.shards
    ]
    (out / MANIFEST_NAME).write_text(manifest.to_json())
    return key


@pytest.mark.slow  # eval and train in subprocesses: ~50 s
def test_a_record_without_an_image_is_one_line_in_eval_and_in_training(asym_export_dir, base_vae_dir, tmp_path):
    out = tmp_path / "prepared"
    manifest = _demo_dataset(out)
    val_key = _drop_image_of_first_record(out, manifest, manifest.shards_of("val")[0].name)
    run = asymvae(
        "eval",
        str(asym_export_dir),
        "--baseline",
        str(base_vae_dir),
        "--data",
        str(out),
        "--resolution",
        "32",
        "--lpips",
        "off",
        "--grid-samples",
        "0",
        "--out",
        str(tmp_path / "eval"),
    )
    assert f"record {val_key} has no image member" in one_line_error(run, "eval")

    # In training the record is met by a DataLoader worker: the first shard the stream reads.
    cfg = tiny_config(
        base_vae_dir, tmp_path / "run", f"data.shards={out}", "data.num_workers=1", "data.shuffle_buffer=4"
    )
    shards = manifest.shards_of("train")
    first = shards[Plan([s.samples for s in shards], cfg.train.seed, 1, 4).shard_order(0)[0]]
    train_key = _drop_image_of_first_record(out, manifest, first.name)
    save_yaml(cfg, tmp_path / "run.yaml")
    run = asymvae("train", str(tmp_path / "run.yaml"))
    assert f"{out / first.name}, record {train_key} has no image member" in one_line_error(run, "train")


# ----------------------------------------------------------------------------------------------------------
# Checkpoints verify themselves; resume says what it skipped


@pytest.mark.slow  # trains twice: ~70 s
def test_resume_skips_a_truncated_checkpoint_for_the_newest_intact_one(base_vae_dir, tmp_path):
    straight = tmp_path / "straight"
    train(tiny_config(base_vae_dir, straight, "train.max_steps=6", "train.keep_checkpoints=3"))
    out = tmp_path / "run"
    cfg = tiny_config(base_vae_dir, out, "train.max_steps=6")
    (out / "checkpoints").mkdir(parents=True)
    for step in ("step-00000002", "step-00000004"):  # a run killed after step 4, whose last save was damaged
        shutil.copytree(straight / "checkpoints" / step, out / "checkpoints" / step)
    damaged = out / "checkpoints" / "step-00000004" / "model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    save_yaml(cfg, tmp_path / "run.yaml")

    explicit = asymvae("train", str(tmp_path / "run.yaml"), "--resume-from", str(damaged.parent))
    line = one_line_error(explicit, "train")
    assert "step-00000004 is damaged: model.safetensors is" in line and "--resume" in line

    run = asymvae("train", str(tmp_path / "run.yaml"), "--resume")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "step-00000004 is damaged: model.safetensors is" in run.stderr and "truncated" in run.stderr
    assert f"resumed from {out / 'checkpoints' / 'step-00000002'}" in run.stderr
    expected, got = weights(straight / "step6"), weights(out / "step6")
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


@pytest.mark.slow  # trains, then two CLI runs: ~50 s
def test_resume_refusals_are_one_line(base_vae_dir, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_config(base_vae_dir, out, "train.max_steps=2")
    train(cfg)
    save_yaml(cfg, tmp_path / "run.yaml")
    missing = asymvae("train", str(tmp_path / "run.yaml"), "--resume-from", str(tmp_path / "nope"))
    assert "does not exist" in one_line_error(missing, "train") and "step-00000002" in missing.stderr
    changed = asymvae("train", str(tmp_path / "run.yaml"), "--resume", "--set", "train.batch_size=1")
    line = one_line_error(changed, "train")
    assert "train.batch_size=2, this run has 1" in line and "step-00000002" in line


def test_training_refuses_at_once_an_export_folder_asymvae_did_not_write(base_vae_dir, tmp_path):
    out = tmp_path / "run"
    (out / "step4").mkdir(parents=True)
    (out / "step4" / "notes.txt").write_text("the user's own file")
    save_yaml(tiny_config(base_vae_dir, out), tmp_path / "run.yaml")
    run = asymvae("train", str(tmp_path / "run.yaml"))
    line = one_line_error(run, "train")
    assert f"{out / 'step4'} exists and was not written by asymvae" in line
    assert not (out / "checkpoints").exists(), "it trained first, to be refused at the end"
    assert os.listdir(out / "step4") == ["notes.txt"]


def test_a_second_run_into_a_held_output_folder_is_one_line_naming_the_holder(base_vae_dir, tmp_path):
    out = tmp_path / "run"
    save_yaml(tiny_config(base_vae_dir, out), tmp_path / "run.yaml")
    with own_folder(out, "the first run"):  # held by this process, as a run in progress holds it
        second = asymvae("train", str(tmp_path / "run.yaml"))
    line = one_line_error(second, "train")
    assert f"{out} is in use by the first run (pid {os.getpid()} on " in line and "--output" in line
    assert not (out / "checkpoints").exists(), "the second run wrote into the held folder"


class _Planted:
    """Unpickling it creates a file: what a pickle from anywhere may do."""

    def __init__(self, witness: Path) -> None:
        self.witness = witness

    def __reduce__(self):
        return (Path.touch, (self.witness,))


@pytest.mark.slow  # trains, then one CLI run: ~40 s
def test_a_checkpoint_is_safetensors_and_json_and_a_pickled_one_is_never_loaded(base_vae_dir, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_config(base_vae_dir, out, "train.max_steps=2", "train.ema=true")
    train(cfg)
    save_yaml(cfg, tmp_path / "run.yaml")
    (written,) = complete_checkpoints(out)
    assert {p.suffix for p in written.iterdir() if p.is_file()} <= {".json", ".safetensors", ".yaml", ""}

    # A checkpoint in accelerate's pickle files, as an earlier asymvae wrote them, with a planted payload.
    old = tmp_path / "old" / "step-00000002"
    shutil.copytree(written, old)
    for state in old.glob("*.json"):
        state.unlink()
    witness = tmp_path / "code-ran"
    torch.save(_Planted(witness), old / "custom_checkpoint_0.pkl")
    torch.save(_Planted(witness), old / "random_states_0.pkl")
    write_marker(old, {"step": 2, "images": 4})  # intact by its checksums: only its format is refused
    run = asymvae("train", str(tmp_path / "run.yaml"), "--resume-from", str(old), "--set", "train.max_steps=4")
    line = one_line_error(run, "train")
    assert f"checkpoint {old} was written by an earlier asymvae in pickle files" in line and "Fix:" in line
    assert not witness.exists(), "a pickle from the checkpoint was loaded"


@pytest.mark.slow  # trains, then three CLI runs: ~70 s
def test_a_checkpoint_of_another_model_is_named_and_a_changed_resume_is_recorded(base_vae_dir, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_config(base_vae_dir, out, "train.max_steps=2")
    train(cfg)
    save_yaml(cfg, tmp_path / "run.yaml")
    (written,) = complete_checkpoints(out)

    other = asymvae("train", str(tmp_path / "run.yaml"), "--resume", "--set", "model.decoder=x1.5")
    line = one_line_error(other, "train")
    assert f"checkpoint {written} was made for another model (model.decoder='base' there, 'x1.5' here)" in line

    # Its config.yaml edited to claim the other model: the weights themselves are found not to fit.
    lying = tmp_path / "lying" / written.name
    shutil.copytree(written, lying)
    (lying / "config.yaml").write_text((lying / "config.yaml").read_text().replace("decoder: base", "decoder: x1.5"))
    write_marker(lying, {"step": 2, "images": 4})
    run = asymvae("train", str(tmp_path / "run.yaml"), "--resume-from", str(lying), "--set", "model.decoder=x1.5")
    line = one_line_error(run, "train")
    assert f"checkpoint {lying} was made for another model: its weights do not fit this one" in line

    changed = ["--set", "train.max_steps=4", "--set", "optim.lr=0.0005"]
    resumed = asymvae("train", str(tmp_path / "run.yaml"), "--resume", *changed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed with config changes since step-00000002 was written: optim.lr: 0.001 -> 0.0005" in resumed.stderr
    (row,) = [json.loads(r) for r in (out / "logs" / "resumes.jsonl").read_text().splitlines()]
    assert row["checkpoint"] == str(written) and row["step"] == 2
    assert row["changes"] == {"optim.lr": [0.001, 0.0005], "train.max_steps": [2, 4]}


@pytest.mark.slow  # a training process interrupted, then resumed: ~40 s
def test_ctrl_c_in_training_is_one_line_and_resume_continues(base_vae_dir, tmp_path):
    import signal

    out = tmp_path / "run"
    cfg = tiny_config(base_vae_dir, out, "train.max_steps=400", "train.checkpoint_every=2")
    save_yaml(cfg, tmp_path / "run.yaml")
    command = [sys.executable, "-m", "asymvae", "train", str(tmp_path / "run.yaml")]
    # SIGINT's default handling, as in a terminal: a suite started in the background (`make test &`) inherits
    # SIGINT ignored, and Python then leaves it ignored, so the run would not stop.
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not complete_checkpoints(out) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and stderr.rstrip().endswith(
        "asymvae train: interrupted (`--resume` continues from the last checkpoint)"
    )
    reached = complete_checkpoints(out)[-1]
    resumed = asymvae(
        "train",
        str(tmp_path / "run.yaml"),
        "--resume",
        "--set",
        "train.max_steps=" + str(int(reached.name.split("-")[1]) + 2),
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {reached}" in resumed.stderr


# ----------------------------------------------------------------------------------------------------------
# The disk and its permissions


@pytest.mark.slow  # two exports in subprocesses: ~40 s
def test_export_into_a_read_only_folder_and_onto_a_full_disk(asym_export_dir, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        run = asymvae("export", str(asym_export_dir), *DIFFUSERS, str(locked / "vae"), preexec=modes_bind())
    finally:
        locked.chmod(0o755)
    line = one_line_error(run, "export")
    assert str(locked) in line and "Permission denied (EACCES)" in line
    assert os.listdir(locked) == []

    with small_disk(tmp_path / "small", 1 << 20) as disk:  # the model's weights alone are 4.8 MB
        run = asymvae("export", str(asym_export_dir), *DIFFUSERS, str(disk.path / "vae"), preexec=disk.preexec)
        line = one_line_error(run, "export")
        assert f"({disk.errno})" in line and str(disk.path) in line
        assert os.listdir(disk.path) == [], "a failed export leaves nothing behind"


def test_export_force_never_replaces_a_folder_asymvae_did_not_write(asym_export_dir, tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("the user's own file")
    run = asymvae("export", str(asym_export_dir), *DIFFUSERS, str(theirs), "--force")
    line = one_line_error(run, "export")
    assert f"{theirs} exists and was not written by asymvae" in line and "Fix:" in line
    assert os.listdir(theirs) == ["notes.txt"] and (theirs / "notes.txt").read_text() == "the user's own file"
    assert sorted(os.listdir(tmp_path)) == ["theirs"], "the refused export left something behind"


def test_inpaint_never_writes_over_a_png_asymvae_did_not_write(tmp_path):
    _png(tmp_path / "in.png", 1)
    _png(tmp_path / "mask.png", 2)
    out = tmp_path / "out"
    out.mkdir()
    _png(out / "prompt0_0.png", 3)  # the user's own picture, by chance named like an output
    theirs = (out / "prompt0_0.png").read_bytes()
    run = asymvae(
        "inpaint", "--vae", str(tmp_path / "vae"), "--pipeline", str(tmp_path / "pipeline"),
        "--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"), "--prompt", "a cat",
        "--out", str(out),
    )  # fmt: skip
    line = one_line_error(run, "inpaint")
    assert f"{out / 'prompt0_0.png'} exists and was not written by asymvae inpaint" in line and "Fix:" in line
    assert (out / "prompt0_0.png").read_bytes() == theirs and os.listdir(out) == ["prompt0_0.png"]


def test_eval_never_overwrites_a_report_file_asymvae_did_not_write(asym_export_dir, base_vae_dir, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "metrics.json").write_text('{"my": "own results"}')
    run = asymvae("eval", str(asym_export_dir), "--baseline", str(base_vae_dir), "--data", DEMO, "--out", str(out))
    line = one_line_error(run, "eval")
    assert f"{out / 'metrics.json'} exists and was not written by asymvae" in line and "Fix:" in line
    assert os.listdir(out) == ["metrics.json"] and (out / "metrics.json").read_text() == '{"my": "own results"}'


@pytest.mark.slow  # a training subprocess: ~40 s
def test_training_onto_a_full_disk_stops_with_one_line_and_leaves_no_checkpoint(base_vae_dir, tmp_path):
    with small_disk(tmp_path / "small", 6 << 20) as disk:  # a checkpoint of the tiny run takes 11.5 MB
        cfg = tiny_config(base_vae_dir, disk.path / "run")
        save_yaml(cfg, tmp_path / "run.yaml")
        run = asymvae("train", str(tmp_path / "run.yaml"), preexec=disk.preexec)
        line = one_line_error(run, "train")
        assert "cannot write a checkpoint" in line and f"({disk.errno})" in line
        assert complete_checkpoints(disk.path / "run") == []
        assert not list((disk.path / "run" / "checkpoints").glob(".*")), "the partial checkpoint was not removed"


def test_prepare_onto_a_full_disk_is_one_line(tmp_path):
    with small_disk(tmp_path / "small", 64 << 10) as disk:
        run = asymvae("prepare", DEMO, "--out", str(disk.path / "out"), *SMALL, preexec=disk.preexec)
        line = one_line_error(run, "prepare")
        assert f"({disk.errno})" in line and str(disk.path / "out") in line
        assert not (disk.path / "out" / MANIFEST_NAME).exists()


@pytest.mark.slow  # prepare, export and a training run: ~40 s
def test_written_files_follow_the_umask(asym_export_dir, base_vae_dir, tmp_path):
    run = asymvae("prepare", DEMO, "--out", str(tmp_path / "data"), *SMALL, preexec=[with_umask(0o027)])
    assert run.returncode == 0, run.stderr[-2000:]
    run = asymvae("export", str(asym_export_dir), *DIFFUSERS, str(tmp_path / "export"), preexec=[with_umask(0o027)])
    assert run.returncode == 0, run.stderr[-2000:]
    old = os.umask(0o027)
    try:
        train(tiny_config(base_vae_dir, tmp_path / "run", "train.max_steps=2"))
    finally:
        os.umask(old)
    written = [p for d in ("data", "export", "run") for p in (tmp_path / d).rglob("*")]
    assert len(written) > 20
    modes = {stat.S_IMODE(p.stat().st_mode) for p in written}
    assert modes == {0o640, 0o750}, {oct(m) for m in modes}


# ----------------------------------------------------------------------------------------------------------
# Object storage that goes away


@pytest.mark.slow  # starts its own S3 server twice and trains: ~1 min
def test_an_s3_server_stopped_mid_transfer_is_one_line_in_prepare_and_in_training(base_vae_dir, tmp_path):
    from asymvae.storage.local_s3 import LocalS3Server

    def stop_when(server: LocalS3Server, proc: subprocess.Popen, ready) -> subprocess.CompletedProcess:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and not ready():
            time.sleep(0.05)
        assert proc.poll() is None, "finished before the server could be stopped"
        server.stop(grace=0.1)
        out, err = proc.communicate(timeout=300)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def popen(*args: str, env: dict[str, str]) -> subprocess.Popen:
        full = {**os.environ, **env, "ASYMVAE_S3_RETRIES": "1", "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "asymvae", *args]
        return subprocess.Popen(cmd, cwd=ROOT, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # prepare, uploading shards
    server = LocalS3Server(tmp_path / "s3a").start()
    server.make_bucket("data")
    key = uuid.uuid4().hex[:8]
    proc = popen(
        "prepare",
        "builtin:demo?count=400&size=128",
        "--out",
        f"s3://data/{key}",
        *SMALL[:2],
        "--set",
        "prepare.shard_max_bytes=65536",
        env=server.env(),
    )
    client = server._client()

    def uploaded() -> bool:  # a second train shard's receipt is stored: uploads are under way
        return any(
            o.object_name.endswith("train-000001.json")
            for o in client.list_objects("data", prefix=key + "/", recursive=True)
        )

    run = stop_when(server, proc, uploaded)
    assert "cannot reach the S3 endpoint" in one_line_error(run, "prepare")

    # training, streaming shards
    server = LocalS3Server(tmp_path / "s3b").start()
    server.make_bucket("data")
    env = server.env()
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        prepare(DEMO, "s3://data/demo", PrepareConfig(min_side=16, max_side=48, shard_max_bytes=65536), progress=False)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    cfg = tiny_config(
        base_vae_dir,
        tmp_path / "run",
        "data.shards=s3://data/demo",
        "data.num_workers=1",
        "train.max_steps=500",
        "train.checkpoint_every=1000",
    )
    save_yaml(cfg, tmp_path / "run.yaml")
    proc = popen("train", str(tmp_path / "run.yaml"), env=env)
    metrics = tmp_path / "run" / "logs" / "metrics.jsonl"
    run = stop_when(server, proc, lambda: metrics.is_file() and len(metrics.read_text().splitlines()) >= 3)
    assert "cannot reach the S3 endpoint" in one_line_error(run, "train")
