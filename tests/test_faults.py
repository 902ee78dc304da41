"""Fault injection with real processes and real files: what a user's data, disk and cluster throw at asymvae.

Each test breaks something the way the world does (a link loop, chmod, a truncated file, a full disk, a
stopped S3 server) and runs the `asymvae` command on it: the user must get one line naming what is wrong
and exit status 2, never a traceback; nothing may be lost or skipped silently; whatever can be repaired is
repaired by running the command again. docs/faults.md tabulates these tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from asymvae.config import ConfigError, save_yaml
from asymvae.data.images import decode_image
from asymvae.data.manifest import MANIFEST_NAME, Manifest, ManifestError, load_manifest
from asymvae.data.prepare import PrepareConfig, prepare
from asymvae.data.shards import RecordError, iter_split
from asymvae.data.sources import DataSourceError, open_source
from asymvae.data.stream_plan import Plan
from asymvae.errors import UserError
from asymvae.inpaint.request import read_request
from asymvae.storage.ownership import own_folder
from asymvae.training.checkpoint import complete_checkpoints, write_marker
from asymvae.training.presets import load_experiment
from asymvae.training.run import train
from tests.support.faults import ROOT, asymvae, modes_bind, one_line_error, small_disk, with_umask
from tests.support.tiny_models import tiny_config, weights

DEMO = "builtin:demo?count=64&size=48"
DIFFUSERS = ["--format", "diffusers", "--out"]
SMALL = ["--prepare.min-side=16", "--prepare.max-side=48", "--prepare.workers=1"]


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


@pytest.mark.integration  # the CLI in a subprocess
def test_prepare_names_every_entry_it_cannot_read_and_counts_it(broken_folder, tmp_path):
    root, expected = broken_folder
    out = tmp_path / "prepared"
    refused = asymvae("prepare", str(root), "--out", str(out), *SMALL, preexec=modes_bind())
    assert "too many unusable images: 7 of 16 > prepare.max_bad_share" in one_line_error(refused, "prepare")
    assert not (out / MANIFEST_NAME).exists()

    run = asymvae("prepare", str(root), "--out", str(out), *SMALL, "--prepare.max-bad-share=0.5", preexec=modes_bind())
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


@pytest.mark.integration  # the CLI in a subprocess
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


def test_a_mistyped_local_folder_is_named_at_once_not_tried_as_a_hub_dataset(tmp_path, monkeypatch):
    (tmp_path / "photos" / "trip").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    expected = {
        "photos/trp": f"no such folder ({tmp_path / 'photos' / 'trp'}; {tmp_path / 'photos'} exists)",
        "photoss/": f"no such folder ({tmp_path / 'photoss'})",
    }
    for spec, fragment in expected.items():
        with pytest.raises(DataSourceError) as info:
            open_source(spec)
        assert f"data.source {spec!r}: {fragment}. Fix:" in str(info.value)


@pytest.mark.integration  # the CLI in a subprocess
def test_a_second_prepare_into_a_held_folder_is_one_line_naming_the_holder(tmp_path):
    out = tmp_path / "prepared"
    with own_folder(out, "the first prepare"):
        second = asymvae("prepare", DEMO, "--out", str(out), *SMALL)
    line = one_line_error(second, "prepare")
    assert f"{out} is in use by the first prepare (pid {os.getpid()} on " in line
    assert not (out / MANIFEST_NAME).exists() and [p.name for p in out.iterdir()] == [".asymvae.lock"]


@pytest.mark.integration  # the CLI in a subprocess
def test_a_sigterm_stops_prepare_and_its_workers_with_one_line(tmp_path):
    source, out = "builtin:demo?count=400&size=256", tmp_path / "out"
    command = [sys.executable, "-m", "asymvae", "prepare", source, "--out", str(out), "--prepare.workers=2"]
    command += ["--prepare.image-format=png"]
    run = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    seen = ""
    while "preparing 400 images" not in seen and (line := run.stderr.readline()):
        seen += line
    time.sleep(0.5)  # the workers are converting images
    run.send_signal(signal.SIGTERM)
    rest = run.stderr.read()
    assert run.wait() == 128 + signal.SIGTERM, rest
    assert "Traceback" not in rest and "BrokenPipeError" not in rest, rest
    assert rest.strip().splitlines()[-1] == "asymvae prepare: stopped by SIGTERM"
    assert not (out / MANIFEST_NAME).exists()


@pytest.mark.integration  # the CLI in a subprocess
def test_prepare_never_overwrites_a_manifest_asymvae_did_not_write(tmp_path):
    out = tmp_path / "project"
    out.mkdir()
    theirs = '{"name": "my project", "version": 3}'
    (out / MANIFEST_NAME).write_text(theirs)
    run = asymvae("prepare", DEMO, "--out", str(out), *SMALL)
    line = one_line_error(run, "prepare")
    assert f"{out / MANIFEST_NAME} exists and was not written by asymvae (format None" in line and "Fix:" in line
    assert (out / MANIFEST_NAME).read_text() == theirs


def test_an_extreme_aspect_ratio_is_skipped_as_too_narrow_not_trained_as_a_sliver(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(12):
        _png(root / f"img{i:02d}.png", i)
    Image.new("RGB", (10000, 70), (200, 30, 30)).save(root / "panorama.png")
    out = tmp_path / "out"
    cfg = PrepareConfig(min_side=16, max_side=1024, max_bad_share=0.2, workers=1)
    result = prepare(str(root), str(out), cfg, progress=False)
    reasons = {item["name"]: item["reason"] for item in result.manifest.bad["files"]}
    narrow = "too narrow: 10000x70 becomes 1024x7 with its long side shrunk to 1024, short side < 16"
    assert reasons == {"panorama.png": narrow} and result.manifest.bad["kinds"] == {"too_small": 1}
    assert result.manifest.samples("train") + result.manifest.samples("val") == 12


@pytest.mark.integration  # the CLI in a subprocess
def test_over_the_bad_share_limit_prepare_lists_every_bad_image(tmp_path):
    root = tmp_path / "mostly_bad"
    root.mkdir()
    for i in range(10):
        _png(root / f"good{i:02d}.png", i)
    for i in range(30):
        (root / f"bad{i:02d}.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    run = asymvae("prepare", str(root), "--out", str(out), *SMALL, "--prepare.workers=2")
    assert one_line_error(run, "prepare").endswith(
        "too many unusable images: 30 of 40 > prepare.max_bad_share=0.05 (no manifest written)."
    )
    assert f"... and 10 more (all listed in {out / 'bad-images.tsv'})" in run.stderr
    rows = (out / "bad-images.tsv").read_text().splitlines()
    assert rows[0] == "name\tkind\treason" and sorted(r.split("\t")[0] for r in rows[1:]) == [
        f"bad{i:02d}.png" for i in range(30)
    ]
    assert not (out / MANIFEST_NAME).exists()


def test_re_preparing_replaces_the_whole_dataset_and_keeps_what_others_wrote(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(12):
        _png(root / f"img{i:02d}.png", i)
    (root / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    cfg = PrepareConfig(min_side=16, max_side=48, max_bad_share=0.2, workers=1)
    first = prepare(str(root), str(out), cfg, progress=False)
    assert first.bad_list and (out / "bad-images.tsv").exists()
    (out / "notes.txt").write_text("mine")
    old_folder = out / first.manifest.shards[0].name.split("/")[0]
    (old_folder / "mine.txt").write_text("mine too")
    interrupted = out / "shards-0123456789abcdef"  # an interrupted prepare of yet another config
    interrupted.mkdir()
    shutil.copy(out / first.manifest.shards[0].name, interrupted / "train-000000.tar")
    receipt = json.loads((out / first.manifest.shards[0].name.replace(".tar", ".json")).read_text())
    receipt["name"] = f"{interrupted.name}/train-000000.tar"
    (interrupted / "train-000000.json").write_text(json.dumps(receipt))

    (root / "broken.png").unlink()
    second = prepare(str(root), str(out), PrepareConfig(min_side=16, max_side=32, workers=1), progress=False)
    assert second.bad_list is None and not (out / "bad-images.tsv").exists()
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == sorted({s.name.split("/")[0] for s in second.manifest.shards} | {old_folder.name})
    assert [p.name for p in old_folder.iterdir()] == ["mine.txt"] and not interrupted.exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert load_manifest(str(out))[0].fingerprint == second.manifest.fingerprint


@pytest.mark.integration  # the CLI in a subprocess
def test_an_s3_endpoint_url_carrying_credentials_is_one_line_that_shows_no_secret(tmp_path):
    env = {
        "S3_ENDPOINT": "",
        "AWS_ENDPOINT_URL_S3": "",
        "AWS_ENDPOINT_URL": "http://AKIAUSER:top-secret-42@127.0.0.1:9",
    }
    run = asymvae("prepare", DEMO, "--out", "s3://bucket/data", *SMALL, env=env)
    line = one_line_error(run, "prepare")
    assert "the S3 endpoint (127.0.0.1:9) is given with credentials in its URL" in line and "Fix:" in line
    assert "top-secret-42" not in run.stderr and "AKIAUSER" not in run.stderr


class _WebPage(BaseHTTPRequestHandler):
    """A web server, not S3: every request gets the same HTML page."""

    def do_GET(self) -> None:
        body = b"<html><body>Welcome to our intranet</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_PUT = do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.integration  # the CLI in a subprocess
def test_an_endpoint_that_is_not_s3_is_one_line(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _WebPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"127.0.0.1:{server.server_address[1]}"
        env = {"S3_ENDPOINT": endpoint, "S3_USE_HTTPS": "0", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}
        run = asymvae("prepare", DEMO, "--out", "s3://bucket/data", *SMALL, env=env)
    finally:
        server.shutdown()
    line = one_line_error(run, "prepare")
    assert f"the S3 endpoint http://{endpoint} gave an answer that is not S3's while trying to" in line
    assert "Fix: point S3_ENDPOINT (or AWS_ENDPOINT_URL) at an S3 server" in line


class _Trickle(BaseHTTPRequestHandler):
    """A server that never finishes an answer: a byte every 0.2 s, of the status line for a bucket check and of
    the body for an object download (its headers come at once)."""

    def _trickle(self, data: bytes) -> None:
        for byte in data:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.2)

    def do_HEAD(self) -> None:
        with contextlib.suppress(OSError):
            self._trickle(b"HTTP/1.1 200 OK\r\n" + b"X-Slow: 1\r\n" * 1000)

    def do_GET(self) -> None:
        with contextlib.suppress(OSError):
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 20))
            self.end_headers()
            self._trickle(b"x" * (1 << 20))

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.integration  # the CLI in a subprocess
def test_a_server_that_trickles_its_answer_is_cut_at_the_deadline(tmp_path, monkeypatch):
    """urllib3's read timeout restarts with every byte; the total deadline does not: a bucket check (in a real
    prepare run) and an object download from a server that sends a byte every 0.2 s end at the deadline, each
    attempt, then as one line naming the setting that allows more time."""
    from asymvae.storage.s3 import S3Settings, S3Store

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"127.0.0.1:{server.server_address[1]}"
    try:
        env = {"S3_ENDPOINT": endpoint, "S3_USE_HTTPS": "0", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b",
               "ASYMVAE_S3_DEADLINE": "1", "ASYMVAE_S3_RETRIES": "1"}  # fmt: skip
        run = asymvae("prepare", DEMO, "--out", "s3://bucket/data", *SMALL, env=env, timeout=120)
        line = one_line_error(run, "prepare")
        assert f"the S3 endpoint http://{endpoint} gave no complete answer within 1 s while trying to" in line
        assert "2 times" in line and "ASYMVAE_S3_DEADLINE=<seconds>" in line

        settings = S3Settings(endpoint=endpoint, secure=False, access_key="a", secret_key="b", retries=1, deadline=1)
        store = S3Store("bucket", "data", settings)
        started = time.monotonic()
        with pytest.raises(UserError, match="no complete answer within 2 s while trying to download data/shard.tar"):
            b"".join(store.iter_chunks("shard.tar"))  # 1 s + 1 s for the MiB each chunk may take
        assert time.monotonic() - started < 30
    finally:
        server.shutdown()


def test_copies_of_a_train_image_are_kept_out_of_val_and_listed(tmp_path):
    """Identical images under other names would leak train images into the held-out split: each val copy of a
    train image is left out (kind `duplicate`, not counted as unusable), wherever it comes in the source's order,
    also when the run resumes after its train shards were written."""
    from asymvae.data.identity import split_of

    folder = tmp_path / "photos"
    folder.mkdir()
    names = [f"img{i:03d}.png" for i in range(40)]
    val = [n for n in names if split_of(n, 0.3) == "val"]
    train = [n for n in names if split_of(n, 0.3) == "train"]
    assert val[0] < train[-1] and train[0] < val[-1]  # copies come before and after their originals
    for n in train:
        _png(folder / n, names.index(n))
    copies = {val[0]: train[-1], val[-1]: train[0]}  # val name -> the train image it copies
    for i, n in enumerate(val):
        shutil.copyfile(folder / copies[n], folder / n) if n in copies else _png(folder / n, 1000 + i)
    cfg = PrepareConfig(min_side=16, max_side=48, val_fraction=0.3, max_bad_share=0.0, workers=1)
    out = tmp_path / "data"
    manifest = prepare(str(folder), str(out), cfg, progress=False).manifest
    train_sources = {s.meta["source"] for s in iter_split(str(out), "train")}
    val_sources = {s.meta["source"] for s in iter_split(str(out), "val")}
    assert train_sources == set(train) and val_sources == set(val) - set(copies)
    listed = {f["name"]: f["reason"] for f in manifest.bad["files"]}
    assert listed == {n: f"same pixels as train image {t}: kept out of val" for n, t in copies.items()}
    assert manifest.bad["kinds"] == {"duplicate": 2} and manifest.bad["unusable"] == 0

    # Resumed after the train shards: the train images' digests come from their receipts.
    again = tmp_path / "again"
    first = prepare(str(folder), str(again), cfg, progress=False).manifest
    for shard in first.shards_of("val"):
        (again / shard.name).unlink()
        (again / shard.name).with_suffix(".json").unlink()
    (again / MANIFEST_NAME).unlink()
    resumed = prepare(str(folder), str(again), cfg, progress=False)
    assert resumed.reused_shards == len(first.shards_of("train"))
    assert {s.meta["source"] for s in iter_split(str(again), "val")} == val_sources


# ----------------------------------------------------------------------------------------------------------
# A damaged dataset: named by the readers, rebuilt by prepare


def test_a_manifest_whose_sample_counts_were_lowered_is_not_trusted(tmp_path):
    out = tmp_path / "prepared"
    _demo_dataset(out)
    original = json.loads((out / MANIFEST_NAME).read_text())
    lowered = json.loads(json.dumps(original))  # one val shard said to hold one sample less, totals to match
    lowered["shards"][-1]["samples"] -= 1
    lowered["splits"]["val"]["samples"] -= 1
    assert lowered["shards"][-1]["split"] == "val"
    (out / MANIFEST_NAME).write_text(json.dumps(lowered))
    held = original["shards"][-1]["samples"]
    shard = original["shards"][-1]["name"]
    with pytest.raises(RecordError, match=f"{shard} holds {held} records, its manifest says {held - 1}"):
        list(iter_split(str(out), "val"))
    totals_only = json.loads(json.dumps(original))
    totals_only["splits"]["train"]["samples"] -= 5
    (out / MANIFEST_NAME).write_text(json.dumps(totals_only))
    with pytest.raises(ManifestError, match="split 'train' records .* its shards hold"):
        load_manifest(str(out))


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
    prepare += ("--prepare.shard-max-bytes=65536", "--prepare.val-fraction=0.3")
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


def _trained_run(base_vae_dir: Path, tmp_path: Path, *overrides: str) -> Path:
    """A finished 2-step run in `tmp_path/run`, its config saved as `tmp_path/run.yaml`; returns the run folder."""
    out = tmp_path / "run"
    cfg = tiny_config(base_vae_dir, out, "train.max_steps=2", *overrides)
    train(cfg)
    save_yaml(cfg, tmp_path / "run.yaml")
    return out


@pytest.mark.slow  # trains, then two CLI runs: ~50 s
def test_resume_refusals_are_one_line(base_vae_dir, tmp_path):
    _trained_run(base_vae_dir, tmp_path)
    missing = asymvae("train", str(tmp_path / "run.yaml"), "--resume-from", str(tmp_path / "nope"))
    assert "does not exist" in one_line_error(missing, "train") and "step-00000002" in missing.stderr
    changed = asymvae("train", str(tmp_path / "run.yaml"), "--resume", "--train.batch-size=1")
    line = one_line_error(changed, "train")
    assert "train.batch_size=2, this run has 1" in line and "step-00000002" in line


@pytest.mark.integration  # the CLI in a subprocess
def test_a_run_name_that_is_not_a_plain_folder_name_is_refused(tmp_path):
    run = asymvae("train", "demo", "--name=../escape", "--train.max-steps=1")
    line = one_line_error(run, "train")
    assert "name '../escape' is not a plain folder name" in line and "Fix:" in line
    assert not (ROOT / "escape").exists()
    for name in ("a/b", "..", ""):
        with pytest.raises(ConfigError, match="is not a plain folder name"):
            load_experiment("demo", [f"name={name}"])


def test_a_batch_larger_than_the_dataset_is_a_user_error_not_a_traceback(base_vae_dir, tmp_path):
    cfg = tiny_config(base_vae_dir, tmp_path / "run", "data.max_samples=6", "train.batch_size=8")
    with pytest.raises(UserError) as info:
        train(cfg)
    assert str(info.value) == (
        "the data has 6 usable images, fewer than one global batch of 8 (8 per process x 1 processes). "
        "Fix: add images, or lower train.batch_size to at most 6."
    )


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


def test_a_second_export_into_a_held_target_is_one_line_naming_the_holder(asym_export_dir, tmp_path):
    from asymvae.storage.ownership import own_target

    target = tmp_path / "exports" / "vae"
    with own_target(target, "the first export"):  # held by this process, as an export in progress holds it
        second = asymvae("export", str(asym_export_dir), *DIFFUSERS, str(target))
    line = one_line_error(second, "export")
    assert f"{target} is in use by the first export (pid {os.getpid()} on " in line
    assert os.listdir(target.parent) == [], "the second export wrote, or the lock file stayed"
    done = asymvae("export", str(asym_export_dir), *DIFFUSERS, str(target))
    assert done.returncode == 0, done.stderr[-2000:]
    assert os.listdir(target.parent) == ["vae"]


class _Planted:
    """Unpickling it creates a file: what a pickle from anywhere may do."""

    def __init__(self, witness: Path) -> None:
        self.witness = witness

    def __reduce__(self):
        return (Path.touch, (self.witness,))


@pytest.mark.slow  # trains, then one CLI run: ~40 s
def test_a_checkpoint_is_safetensors_and_json_and_a_pickled_one_is_never_loaded(base_vae_dir, tmp_path):
    out = _trained_run(base_vae_dir, tmp_path, "train.ema=true")
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
    run = asymvae("train", str(tmp_path / "run.yaml"), "--resume-from", str(old), "--train.max-steps=4")
    line = one_line_error(run, "train")
    assert f"checkpoint {old} was written by an earlier asymvae in pickle files" in line and "Fix:" in line
    assert not witness.exists(), "a pickle from the checkpoint was loaded"


@pytest.mark.slow  # trains, then three CLI runs: ~70 s
def test_a_checkpoint_of_another_model_is_named_and_a_changed_resume_is_recorded(base_vae_dir, tmp_path):
    out = _trained_run(base_vae_dir, tmp_path)
    (written,) = complete_checkpoints(out)

    other = asymvae("train", str(tmp_path / "run.yaml"), "--resume", "--model.decoder=x1.5")
    line = one_line_error(other, "train")
    assert f"checkpoint {written} was made for another model (model.decoder='base' there, 'x1.5' here)" in line

    # Its config.yaml edited to claim the other model: the weights themselves are found not to fit.
    lying = tmp_path / "lying" / written.name
    shutil.copytree(written, lying)
    (lying / "config.yaml").write_text((lying / "config.yaml").read_text().replace("decoder: base", "decoder: x1.5"))
    write_marker(lying, {"step": 2, "images": 4})
    run = asymvae("train", str(tmp_path / "run.yaml"), "--resume-from", str(lying), "--model.decoder=x1.5")
    line = one_line_error(run, "train")
    assert f"checkpoint {lying} was made for another model: its weights do not fit this one" in line

    changed = ["--train.max-steps=4", "--optim.lr=0.0005"]
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
        "--train.max-steps=" + str(int(reached.name.split("-")[1]) + 2),
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


# An export that stops itself once everything is written into its temporary folder, just before it would publish
# it: the test kills it there, deterministically, however busy the machine (polling for the folder raced a fast
# export on a loaded CPU). Only this child process is changed; it runs the real `asymvae export`.
PAUSED_BEFORE_PUBLISH = """
import os, signal, sys
import asymvae.export.run as run
publish = run.publish
def paused(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGSTOP)
    return publish(*args, **kwargs)
run.publish = paused
from asymvae.cli import main
main(sys.argv[1:])
"""


def test_a_temporary_folder_a_killed_export_left_is_removed_by_the_next_export(asym_export_dir, tmp_path):
    target = tmp_path / "out"
    command = [sys.executable, "-c", PAUSED_BEFORE_PUBLISH, "export", str(asym_export_dir), *DIFFUSERS, str(target)]
    export = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prefix = f".out.tmp-{socket.gethostname()}-"
    _, status = os.waitpid(export.pid, os.WUNTRACED)  # returns once it has stopped itself (or ended)
    assert os.WIFSTOPPED(status), f"the export ended (status {status}) instead of stopping before it publishes"
    assert any(p.name.startswith(prefix) for p in tmp_path.iterdir())
    export.send_signal(signal.SIGTERM)
    export.send_signal(signal.SIGCONT)
    assert export.wait() == -signal.SIGTERM
    left = sorted(p.name for p in tmp_path.iterdir())  # its lock file holds no lock: the kernel dropped it
    assert left == sorted([f"{prefix}{export.pid}", ".out.asymvae.lock"])
    (tmp_path / "mine.tmp-1").mkdir()  # not asymvae's: stays
    run = asymvae("export", str(asym_export_dir), *DIFFUSERS, str(target))
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.tmp-1", "out"]


def test_inpaint_reads_its_image_as_prepare_does_alpha_over_white_and_exif_turned(tmp_path):
    rgba = np.zeros((32, 64, 4), dtype=np.uint8)
    rgba[..., 1] = 200  # green everywhere, transparent on the left half
    rgba[:, 32:, 3] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned by 90 degrees: 32 wide, 64 high
    Image.fromarray(rgba).save(tmp_path / "in.png", exif=exif)
    Image.new("L", (32, 64), 255).save(tmp_path / "mask.png")  # drawn on the image as shown
    request = read_request(tmp_path / "in.png", tmp_path / "mask.png", ["a cat"])
    assert request.image.size == request.mask.size == (32, 64)
    assert request.image.tobytes() == decode_image(tmp_path / "in.png").tobytes()
    assert request.image.getpixel((16, 0)) == (255, 255, 255)  # the transparent half over white, as prepare
    assert request.image.getpixel((16, 63)) == (0, 200, 0)


@pytest.mark.integration  # the CLI in a subprocess
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
def test_an_output_path_through_a_file_is_one_line(base_vae_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("a file")
    out = tmp_path / "notes.txt" / "out"
    run = asymvae("prepare", DEMO, "--out", str(out), *SMALL)
    line = one_line_error(run, "prepare")
    assert line.endswith(
        f"{out}: Not a directory (ENOTDIR). Fix: a part of that path is a file, not a folder: choose another location."
    )
    with pytest.raises(UserError, match="Not a directory"):
        train(tiny_config(base_vae_dir, out))
    assert (tmp_path / "notes.txt").read_text() == "a file"


def test_training_onto_a_full_disk_stops_with_one_line_and_leaves_no_checkpoint(base_vae_dir, tmp_path):
    with small_disk(tmp_path / "small", 6 << 20) as disk:  # a checkpoint of the tiny run takes 11.5 MB
        cfg = tiny_config(base_vae_dir, disk.path / "run")
        save_yaml(cfg, tmp_path / "run.yaml")
        run = asymvae("train", str(tmp_path / "run.yaml"), preexec=disk.preexec)
        line = one_line_error(run, "train")
        assert "cannot write a checkpoint" in line and f"({disk.errno})" in line
        assert complete_checkpoints(disk.path / "run") == []
        assert not list((disk.path / "run" / "checkpoints").glob(".*")), "the partial checkpoint was not removed"


@pytest.mark.integration  # the CLI in a subprocess
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
        "--prepare.shard-max-bytes=65536",
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
