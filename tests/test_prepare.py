"""`asymvae prepare` into a local folder: bad images, modes, splits, shard bounds, idempotence, resume, checksums."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from asymvae.data.identity import split_of
from asymvae.data.manifest import MANIFEST_NAME, load_manifest
from asymvae.data.prepare import PrepareConfig, PrepareError, prepare
from asymvae.data.shards import iter_records, iter_split
from asymvae.masks import make_mask
from asymvae.storage import ChecksumError
from asymvae.storage.ownership import LOCK_NAME


def _photo(size=(96, 80), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _save(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def messy_folder(tmp_path):
    """Good images in every mode that needs converting, plus corrupt, empty, mistyped and tiny files."""
    root = tmp_path / "src"
    root.mkdir()
    for i in range(6):
        (root / f"rgb{i}.jpg").write_bytes(_save(_photo(seed=i), "JPEG"))
    (root / "big.png").write_bytes(_save(_photo((300, 150), 9), "PNG"))
    (root / "gray.png").write_bytes(_save(_photo(seed=10).convert("L"), "PNG"))
    (root / "rgba.png").write_bytes(_save(_photo(seed=11).convert("RGBA"), "PNG"))
    (root / "palette.png").write_bytes(_save(_photo(seed=12).convert("P"), "PNG"))
    sixteen = Image.fromarray((np.arange(96 * 80, dtype=np.uint16).reshape(80, 96) * 8).astype(np.uint16))
    (root / "deep16.png").write_bytes(_save(sixteen, "PNG"))
    (root / "tiny.png").write_bytes(_save(_photo((8, 8), 13), "PNG"))
    (root / "corrupt.jpg").write_bytes(_save(_photo(seed=14), "JPEG")[:300])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.png").write_bytes(b"this is text, not a picture\n")
    return root


def _cfg(**kw) -> PrepareConfig:
    base = dict(max_side=128, min_side=32, val_fraction=0.3, workers=2, max_bad_share=0.5)
    base.update(kw)
    return PrepareConfig(**base)


def test_messy_folder_skips_and_reports_bad_files_and_converts_modes(messy_folder, tmp_path):
    out = tmp_path / "out"
    result = prepare(str(messy_folder), str(out), _cfg(), progress=False)
    m = result.manifest
    bad = {item["name"]: item["reason"] for item in m.bad["files"]}
    assert sorted(bad) == ["corrupt.jpg", "empty.jpg", "notes.png", "tiny.png"]
    assert "too small" in bad["tiny.png"] and "empty" in bad["empty.jpg"] and "not an image" in bad["notes.png"]
    assert m.bad["count"] == 4 and m.bad["total"] == 15
    assert m.bad["kinds"] == {"corrupt": 1, "empty": 1, "not_image": 1, "too_small": 1}
    assert m.samples("train") + m.samples("val") == 11
    assert m.splits["val"]["samples"] == m.samples("val")
    seen = {}
    for split in ("train", "val"):
        for sample in iter_split(str(out), split):
            seen[sample.meta["source"]] = sample
            assert sample.image.mode == "RGB" and max(sample.image.size) <= 128
            assert (sample.mask is not None) == (split == "val")
            assert sample.meta["split"] == split == split_of(sample.meta["source"], 0.3)
    assert set(seen) == {p.name for p in messy_folder.iterdir()} - set(bad)
    assert seen["big.png"].image.size == (128, 64) and seen["big.png"].meta["original_width"] == 300
    # RGBA over white, 16-bit scaled, grayscale and palette expanded: all decode as 3-channel images
    assert np.asarray(seen["deep16.png"].image).shape == (80, 96, 3)
    assert json.loads((out / MANIFEST_NAME).read_text())["bad"]["count"] == 4


def test_val_masks_are_the_fixed_evaluation_masks(messy_folder, tmp_path):
    cfg = _cfg(val_fraction=0.9)
    prepare(str(messy_folder), str(tmp_path / "a"), cfg, progress=False)
    prepare(str(messy_folder), str(tmp_path / "b"), _cfg(val_fraction=0.9, workers=1), progress=False)
    a, b = list(iter_split(str(tmp_path / "a"), "val")), list(iter_split(str(tmp_path / "b"), "val"))
    assert len(a) >= 3 and [s.key for s in a] == [s.key for s in b]
    for x, y in zip(a, b, strict=True):
        assert x.mask.dtype == bool and x.mask.shape == (x.image.size[1], x.image.size[0])
        assert np.array_equal(x.mask, y.mask) and 0 < x.mask.mean() < 1  # strokes/boxes, never all ones
    from asymvae.data.prepare import mask_index

    s = a[0]
    expected = make_mask(cfg.eval_masks, s.mask.shape[0], s.mask.shape[1], cfg.mask_seed, mask_index(s.meta["source"]))
    assert np.array_equal(s.mask, expected > 0.5)
    # same inputs, different worker count: byte-identical shards
    ma, mb = load_manifest(str(tmp_path / "a"))[0], load_manifest(str(tmp_path / "b"))[0]
    assert [s.sha256 for s in ma.shards] == [s.sha256 for s in mb.shards]


def test_too_many_bad_images_fails_without_a_manifest(messy_folder, tmp_path):
    with pytest.raises(PrepareError, match="too many unusable images") as e:
        prepare(str(messy_folder), str(tmp_path / "out"), _cfg(max_bad_share=0.05), progress=False)
    assert "corrupt.jpg" in str(e.value) and "prepare.max_bad_share" in str(e.value)
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()


def test_shards_respect_the_size_bound(tmp_path):
    out = tmp_path / "out"
    result = prepare("builtin:demo?count=40&size=64", str(out), _cfg(shard_max_bytes=65536), progress=False)
    shards = result.manifest.shards
    assert len(shards) > 3 and all(s.bytes <= 65536 for s in shards)
    for s in shards:
        data = (out / s.name).read_bytes()
        assert len(data) == s.bytes
        keys = [k for k, _ in iter_records(data)]
        assert len(keys) == s.samples and len(set(keys)) == len(keys)
    ordinals = [
        json.loads(f["json"])["ordinal"]
        for s in result.manifest.shards_of("train")
        for _, f in iter_records((out / s.name).read_bytes())
    ]
    assert ordinals == list(range(result.manifest.samples("train")))


def _dataset_mtimes(out):
    """Modification times of the dataset's files (the lock names each run that held the folder: not data)."""
    return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != LOCK_NAME}


def test_rerun_does_no_work_and_resume_keeps_finished_shards(tmp_path):
    out = tmp_path / "out"
    cfg = _cfg(shard_max_bytes=65536, val_fraction=0.2)
    first = prepare("builtin:demo?count=40&size=64", str(out), cfg, progress=False)
    assert not first.up_to_date and first.processed == 40
    mtimes = _dataset_mtimes(out)
    again = prepare("builtin:demo?count=40&size=64", str(out), cfg, progress=False)
    assert again.up_to_date and again.processed == 0
    assert _dataset_mtimes(out) == mtimes, "an up-to-date re-run wrote something"

    # An interruption: manifest never written, the last two train shards lost (one receipt, one tar).
    (out / MANIFEST_NAME).unlink()
    train = first.manifest.shards_of("train")
    (out / train[-1].name).with_suffix(".json").unlink()
    (out / train[-2].name).unlink()
    resumed = prepare("builtin:demo?count=40&size=64", str(out), cfg, progress=False)
    assert not resumed.up_to_date and resumed.reused_shards == len(first.manifest.shards) - 2
    assert 0 < resumed.processed < 40
    assert resumed.manifest.shards == first.manifest.shards  # identical names, counts and checksums

    # A changed source is new work in a new folder; the old shards stay until removed.
    changed = prepare("builtin:demo?count=41&size=64", str(out), cfg, progress=False)
    assert changed.manifest.fingerprint != first.manifest.fingerprint and changed.processed == 41


def test_corrupted_shard_is_caught_by_its_checksum(tmp_path):
    out = tmp_path / "out"
    result = prepare("builtin:demo?count=12&size=64", str(out), _cfg(val_fraction=0.0), progress=False)
    shard = out / result.manifest.shards[0].name
    data = bytearray(shard.read_bytes())
    data[2000] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="corrupt"):
        list(iter_split(str(out), "train"))


def test_prepare_cli_and_its_errors(tmp_path, capsys):
    from asymvae.cli import main

    out = tmp_path / "cli"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "prepare",
                "builtin:demo?count=8&size=64",
                "--out",
                str(out),
                "--prepare.max-side=32",
                "--prepare.min-side=16",
            ]
        )
    assert e.value.code == 0
    assert f"--data.shards {out / MANIFEST_NAME}" in capsys.readouterr().out
    assert load_manifest(str(out))[0].config["max_side"] == 32
    with pytest.raises(SystemExit) as e:
        main(["prepare", "builtin:demo", "--out", str(out), "--prepare.max-sid=32"])
    assert e.value.code == 2 and "did you mean --prepare.max-side?" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["prepare", str(tmp_path / "nope"), "--out", str(out)])
    assert e.value.code == 2 and "no such folder" in capsys.readouterr().err
