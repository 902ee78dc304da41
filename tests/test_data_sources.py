"""Image decoding, source opening (folders, save_to_disk, parquet, hub ids, builtin:demo) and the scan."""

from __future__ import annotations

import io
import os
import pickle
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # after the offline switches: read at import
import huggingface_hub.constants
import numpy as np
import pytest
from PIL import Image

from asymvae.data.demo_images import PHOTO_NAMES, DemoSource, demo_images
from asymvae.data.images import BadImageError, check_image, decode_image
from asymvae.data.scan import scan_source
from asymvae.data.sources import DataSourceError, FolderSource, HFDatasetSource, open_source

MIN_SIDE = 64


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No network, and datasets' cache in a temporary folder, whatever was imported before this module."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf_cache"))


def _noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def _encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _rgba_half_transparent(w: int = 80, h: int = 72) -> Image.Image:
    """Left half black with alpha 0 (sprite background), right half opaque red."""
    arr = np.zeros((h, w, 4), np.uint8)
    arr[:, w // 2 :] = (255, 0, 0, 255)
    return Image.fromarray(arr, "RGBA")


def _exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90 degrees clockwise
    return _encode(_noise((100, 64), 3), "JPEG", exif=exif.tobytes())


# name -> (bytes, size after decoding) for usable files; bad files map to (bytes, reason fragment)
GOOD: dict[str, tuple[bytes, tuple[int, int]]] = {}
BAD: dict[str, tuple[bytes, str]] = {}


def _build_files() -> None:
    gray16 = np.zeros((66, 70), np.uint16)
    gray16[:22] = 65535
    gray16[22:44] = 32768
    palette = Image.new("P", (70, 70), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * (254 * 3))
    palette.paste(0, (0, 0, 35, 70))
    la = Image.fromarray(np.stack([np.full((64, 64), 40, np.uint8), np.zeros((64, 64), np.uint8)], -1), "LA")
    GOOD.update(
        {
            "rgb.jpg": (_encode(_noise((80, 64)), "JPEG"), (80, 64)),
            "rgb.png": (_encode(_noise((100, 70), 1), "PNG"), (100, 70)),
            "UPPER.JPG": (_encode(_noise((64, 64), 2), "JPEG"), (64, 64)),
            "sub/deeper/nested.webp": (_encode(_noise((64, 90), 4), "WEBP"), (64, 90)),
            "gray.png": (_encode(_noise((64, 64)).convert("L"), "PNG"), (64, 64)),
            "la.png": (_encode(la, "PNG"), (64, 64)),
            "rgba.png": (_encode(_rgba_half_transparent(), "PNG"), (80, 72)),
            "palette.png": (_encode(palette, "PNG"), (70, 70)),
            "palette_trns.png": (_encode(palette, "PNG", transparency=0), (70, 70)),
            "cmyk.jpg": (
                _encode(Image.new("CMYK", (64, 64), (0, 255, 255, 0)), "JPEG", quality=95),
                (64, 64),
            ),
            "gray16.png": (_encode(Image.fromarray(gray16), "PNG"), (70, 66)),
            "exif_rotated.jpg": (_exif_rotated_jpeg(), (64, 100)),
        }
    )
    jpeg = _encode(_noise((128, 128), 5), "JPEG")
    BAD.update(
        {
            "tiny.png": (_encode(_noise((20, 30)), "PNG"), "too small: 20x30, short side < 64"),
            "empty.png": (b"", "empty file"),
            "text.jpg": (b"this is not a jpeg\n" * 10, "cannot identify image file"),
            "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        }
    )


_build_files()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for name, (data, _) in {**GOOD, **BAD}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    # Not images by extension, or hidden: never listed.
    (root / "notes.txt").write_text("hello")
    (root / "metadata.jsonl").write_text('{"file_name": "rgb.png", "text": "x"}\n')
    (root / ".hidden.png").write_bytes(GOOD["rgb.png"][0])
    (root / "._rgb.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    return root


# ----------------------------------------------------------------------------------------------------------
# decode_image


@pytest.mark.parametrize("name", sorted(GOOD))
def test_decode_good_files_to_rgb(name: str, image_folder: Path) -> None:
    data, size = GOOD[name]
    for given in (data, image_folder / name, str(image_folder / name)):
        img = decode_image(given, min_side=MIN_SIDE)
        assert img.mode == "RGB"
        assert img.size == size
        assert img.getbbox() is not None or name == "la.png"  # loaded, real pixels


@pytest.mark.parametrize("name", sorted(BAD))
def test_decode_bad_files_raise_with_reason(name: str, image_folder: Path) -> None:
    data, reason = BAD[name]
    for given in (data, image_folder / name):
        with pytest.raises(BadImageError) as info:
            decode_image(given, min_side=MIN_SIDE)
        assert reason in info.value.reason
        assert isinstance(info.value, ValueError)
        # The cheaper scan check (JPEG draft decoding) must reject the same files.
        with pytest.raises(BadImageError):
            check_image(given, min_side=MIN_SIDE)


def test_tiny_image_is_fine_without_min_side() -> None:
    assert decode_image(BAD["tiny.png"][0]).size == (20, 30)


def test_sixteen_bit_scaled_by_depth_not_clipped() -> None:
    arr = np.asarray(decode_image(GOOD["gray16.png"][0]))
    assert arr.shape == (66, 70, 3)
    assert (arr[:22] == 255).all()
    assert np.abs(arr[22:44].astype(int) - 128).max() <= 1
    assert (arr[44:] == 0).all()
    big_endian = Image.new("I;16B", (4, 4), 32768)
    assert abs(int(np.asarray(decode_image(big_endian))[0, 0, 0]) - 128) <= 1


def test_alpha_composited_over_white() -> None:
    arr = np.asarray(decode_image(GOOD["rgba.png"][0]))
    assert (arr[:, :40] == 255).all(), "transparent black must read as white background"
    assert (arr[:, 40:] == (255, 0, 0)).all()
    assert (np.asarray(decode_image(GOOD["la.png"][0])) == 255).all()
    palette = np.asarray(decode_image(GOOD["palette_trns.png"][0]))
    assert (palette[:, :35] == 255).all()
    assert (palette[:, 35:] == (0, 255, 0)).all()
    opaque_palette = np.asarray(decode_image(GOOD["palette.png"][0]))
    assert (opaque_palette[:, :35] == 0).all()


def test_cmyk_jpeg_colours() -> None:
    arr = np.asarray(decode_image(GOOD["cmyk.jpg"][0])).astype(int)
    assert np.abs(arr - (255, 0, 0)).max() < 12


def test_exif_orientation_applied() -> None:
    img = decode_image(_exif_rotated_jpeg())
    assert img.size == (64, 100)


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("1", 1, 255),
        ("L", 77, 77),
        ("La", (77, 255), 77),
        ("PA", (0, 0), None),
        ("RGBa", (10, 20, 30, 255), (10, 20, 30)),
        ("RGBX", (10, 20, 30, 0), (10, 20, 30)),
        ("YCbCr", (128, 128, 128), None),
        ("LAB", (255, 128, 128), None),
        ("HSV", (0, 0, 200), 200),
        ("I", 65535, 255),
        ("I", 70000 * 256, None),
        ("F", 0.5, 128),
        ("F", 200.0, 200),
        ("I;16", 257 * 40, 40),
    ],
)
def test_every_mode_converts_to_rgb(mode: str, value: object, expected: object) -> None:
    img = decode_image(Image.new(mode, (9, 7), value))
    assert img.mode == "RGB" and img.size == (9, 7)
    if expected is not None:
        pixel = img.getpixel((0, 0))
        assert pixel == (expected if isinstance(expected, tuple) else (expected,) * 3)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for size in ((40, 40), (100, 100)):  # over the limit (Pillow only warns) and over twice (Pillow raises)
        with pytest.raises(BadImageError, match="too large") as info:
            decode_image(_encode(_noise(size), "PNG"))
        assert info.value.kind == "too_large"
        assert "MAX_IMAGE_PIXELS" in info.value.reason


def test_decode_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadImageError, match="cannot read file"):
        decode_image(tmp_path / "missing.png")


# ----------------------------------------------------------------------------------------------------------
# Image folders and the scan


def test_folder_lists_images_recursively_sorted(image_folder: Path) -> None:
    source = open_source(str(image_folder))
    assert isinstance(source, FolderSource)
    names = [os.path.relpath(source.name(i), image_folder) for i in range(len(source))]
    assert sorted(names) == sorted(set(GOOD) | set(BAD))  # corrupt files included, txt/hidden not
    assert [Path(n) for n in names] == sorted(Path(n) for n in names)
    assert source.load(names.index("rgb.png")) == GOOD["rgb.png"][0]
    assert open_source(str(image_folder), max_samples=3).paths == source.paths[:3]


def test_scan_reports_bad_files_by_name(image_folder: Path) -> None:
    source = open_source(str(image_folder))
    report = scan_source(source, min_side=MIN_SIDE, max_bad_share=0.5, progress=False)
    assert report.total == len(GOOD) + len(BAD)
    assert sorted(os.path.relpath(source.name(i), image_folder) for i in report.good) == sorted(GOOD)
    reasons = {Path(name).name: reason for name, reason, _ in report.bad}
    assert set(reasons) == set(BAD)
    for name, (_, fragment) in BAD.items():
        assert fragment in reasons[name]
    summary = report.summary()
    assert "16 images" in summary and "12 usable" in summary and "4 unusable" in summary
    assert all(name in summary for name in BAD)


def test_scan_fails_above_max_bad_share(image_folder: Path) -> None:
    source = open_source(str(image_folder))
    with pytest.raises(DataSourceError) as info:
        scan_source(source, min_side=MIN_SIDE, max_bad_share=0.2, progress=False)
    message = str(info.value)
    assert all(name in message for name in BAD)
    assert "--data.max-bad-share 0.25" in message  # the value that would accept this folder
    assert "min-side" in message  # a too-small image is among the bad ones
    report = scan_source(source, min_side=MIN_SIDE, max_bad_share=0.25, progress=False)
    assert len(report.bad) == 4


def test_scan_empty_source_fails(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="no images"):
        scan_source(FolderSource([], "empty test source"), min_side=0, max_bad_share=1.0, progress=False)
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(DataSourceError, match="no image files"):
        open_source(str(tmp_path))


def test_scan_all_bad_fails_even_when_allowed(image_folder: Path) -> None:
    source = FolderSource([image_folder / name for name in BAD], "only bad files")
    with pytest.raises(DataSourceError, match="no usable image"):
        scan_source(source, min_side=MIN_SIDE, max_bad_share=1.0, progress=False)


def test_summary_lists_at_most_20_bad_files(tmp_path: Path) -> None:
    for i in range(25):
        (tmp_path / f"bad{i:02d}.png").write_bytes(b"")
    (tmp_path / "good.png").write_bytes(GOOD["rgb.png"][0])
    report = scan_source(open_source(str(tmp_path)), min_side=0, max_bad_share=1.0, progress=False)
    summary = report.summary()
    assert report.good == [25] and len(report.bad) == 25 and report.kinds == {"empty": 25}
    assert "bad19.png" in summary and "bad20.png" not in summary and "... and 5 more" in summary


def test_split_subfolders(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("test", 2)):
        (tmp_path / split).mkdir()
        for i in range(n):
            (tmp_path / split / f"{i}.png").write_bytes(GOOD["rgb.png"][0])
    assert len(open_source(str(tmp_path))) == 3
    assert len(open_source(str(tmp_path), split="test")) == 2
    with pytest.raises(DataSourceError, match=r"data\.split"):
        open_source(str(tmp_path), split="validation")


def test_scan_is_fast(tmp_path: Path) -> None:
    data = _encode(_noise((96, 96)), "JPEG")
    for i in range(100):
        (tmp_path / f"{i:03d}.jpg").write_bytes(data)
    source = open_source(str(tmp_path))
    start = time.perf_counter()
    report = scan_source(source, min_side=MIN_SIDE, max_bad_share=0.0, progress=False)
    assert len(report.good) == 100
    assert time.perf_counter() - start < 2.0


# ----------------------------------------------------------------------------------------------------------
# Hugging Face datasets


def _hf_dataset(n: int = 5, corrupt_row: int | None = None) -> datasets.Dataset:
    images: list[object] = [_noise((64 + i, 72), i) for i in range(n)]
    if corrupt_row is not None:
        images[corrupt_row] = {"bytes": b"definitely not an image", "path": None}
    features = datasets.Features(
        {"image": datasets.Image(), "text": datasets.Value("string"), "label": datasets.Value("int64")}
    )
    columns = {"image": images, "text": [f"caption {i}" for i in range(n)], "label": list(range(n))}
    return datasets.Dataset.from_dict(columns, features)


def test_save_to_disk_dataset(tmp_path: Path) -> None:
    _hf_dataset(corrupt_row=3).save_to_disk(str(tmp_path / "ds"))
    source = open_source(str(tmp_path / "ds"))
    assert isinstance(source, HFDatasetSource) and source.column == "image" and len(source) == 5
    raw = source.load(1)
    assert isinstance(raw, bytes)
    assert decode_image(raw).size == (65, 72)
    assert source.name(3) == f"{tmp_path / 'ds'}[train][3]"
    report = scan_source(source, min_side=MIN_SIDE, max_bad_share=0.5, progress=False)
    assert report.good == [0, 1, 2, 4]
    assert report.bad == [(source.name(3), "not an image (cannot identify image file)", "not_image")]
    assert len(open_source(str(tmp_path / "ds"), image_column="image", max_samples=2)) == 2


def test_save_to_disk_dataset_dict_splits_and_columns(tmp_path: Path) -> None:
    path = str(tmp_path / "dd")
    datasets.DatasetDict({"train": _hf_dataset(4), "test": _hf_dataset(2)}).save_to_disk(path)
    assert len(open_source(path)) == 4
    test = open_source(path, split="test")
    assert len(test) == 2 and test.name(1) == f"{path}[test][1]"
    with pytest.raises(DataSourceError) as info:
        open_source(path, split="validation")
    assert "'test'" in str(info.value) and "'train'" in str(info.value) and "validation" in str(info.value)
    with pytest.raises(DataSourceError) as info:
        open_source(path, image_column="pixels")
    assert "'pixels'" in str(info.value) and "'image'" in str(info.value) and "'text'" in str(info.value)
    with pytest.raises(DataSourceError, match="not images"):
        open_source(path, image_column="label")
    # Strings may be file paths, so a caption column opens, and the scan says what is wrong with it.
    with pytest.raises(DataSourceError, match="no usable image") as info:
        scan_source(open_source(path, image_column="text"), min_side=0, max_bad_share=1.0, progress=False)
    assert "cannot read file 'caption 0'" in str(info.value)


def test_untyped_image_columns(tmp_path: Path) -> None:
    png = GOOD["rgb.png"][0]
    datasets.Dataset.from_dict({"key": ["a", "b"], "jpg": [png, png]}).save_to_disk(str(tmp_path / "bin"))
    source = open_source(str(tmp_path / "bin"))
    assert source.column == "jpg" and source.load(0) == png
    (tmp_path / "x.png").write_bytes(png)
    paths = datasets.Dataset.from_dict({"image": [str(tmp_path / "x.png")], "label": [0]})
    paths.save_to_disk(str(tmp_path / "paths"))
    assert open_source(str(tmp_path / "paths")).load(0) == png
    datasets.Dataset.from_dict({"text": ["a"], "label": [1]}).save_to_disk(str(tmp_path / "text"))
    with pytest.raises(DataSourceError, match=r"--data\.image-column") as info:
        open_source(str(tmp_path / "text"))
    assert "text" in str(info.value) and "label" in str(info.value)


def test_parquet_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    _hf_dataset(3).to_parquet(str(tmp_path / "data" / "train-00000.parquet"))
    source = open_source(str(tmp_path))
    assert isinstance(source, HFDatasetSource) and len(source) == 3 and source.column == "image"
    report = scan_source(source, min_side=MIN_SIDE, max_bad_share=0.0, progress=False)
    assert report.good == [0, 1, 2]
    assert len(open_source(str(tmp_path / "data" / "train-00000.parquet"))) == 3


def test_hub_id_offline_gives_helpful_error() -> None:
    start = time.perf_counter()
    with pytest.raises(DataSourceError) as info:
        open_source("someone/surely-not-cached-dataset", split="train")
    message = str(info.value)
    for fragment in ("someone/surely-not-cached-dataset", "hub", "HF_HUB_OFFLINE", "save_to_disk", "offline"):
        assert fragment in message
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("spec", ["/no/such/folder/anywhere", "./not-here", "~/not-here-either", "a/b/c"])
def test_missing_path_is_reported(spec: str) -> None:
    with pytest.raises(DataSourceError, match="no such folder"):
        open_source(spec)


def test_sources_pickle_for_dataloader_workers(image_folder: Path, tmp_path: Path) -> None:
    _hf_dataset(3).save_to_disk(str(tmp_path / "ds"))
    for spec in (str(image_folder), str(tmp_path / "ds"), "builtin:demo?size=32&count=4"):
        source = open_source(spec)
        clone = pickle.loads(pickle.dumps(source))
        assert len(clone) == len(source) and clone.name(1) == source.name(1)
        assert np.array_equal(np.asarray(decode_image(clone.load(1))), np.asarray(decode_image(source.load(1))))


# ----------------------------------------------------------------------------------------------------------
# builtin:demo


def test_demo_images_deterministic() -> None:
    first = demo_images(count=12, size=40, seed=0)
    again = demo_images(count=12, size=40, seed=0)
    other = demo_images(count=12, size=40, seed=1)
    assert len(first) == 12
    assert all(img.mode == "RGB" and img.size == (40, 40) for img in first)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, other, strict=True))
    assert len({np.asarray(img).tobytes() for img in first}) == 12


def test_builtin_demo_source() -> None:
    source = open_source("builtin:demo")
    assert isinstance(source, DemoSource) and len(source) == 96
    img = decode_image(source.load(17), min_side=128)
    assert img.mode == "RGB" and img.size == (256, 256)
    assert source.name(17) == f"builtin:demo[17] ({PHOTO_NAMES[17 % len(PHOTO_NAMES)]})"
    small = open_source("builtin:demo?size=48&count=30", max_samples=20)
    assert len(small) == 20 and small.load(0).size == (48, 48)
    assert scan_source(small, min_side=48, max_bad_share=0.0, progress=False).good == list(range(20))
    with pytest.raises(DataSourceError, match="builtin:demo"):
        open_source("builtin:nonsense")


def test_scan_names_links_and_special_files_and_lists_them_all(tmp_path: Path) -> None:
    """The training scan counts what a folder cannot give (broken and looping links, a fifo, a folder link
    back to where it is) as bad images by name, and writes all of them to the list it is given."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    for i in range(4):
        (root / "sub" / f"{i}.png").write_bytes(GOOD["rgb.png"][0])
    (root / "broken.png").symlink_to("missing.png")
    (root / "a.jpg").symlink_to("b.jpg")
    (root / "b.jpg").symlink_to("a.jpg")
    (root / "sub" / "up").symlink_to("..")
    os.mkfifo(root / "pipe.png")
    (root / "notes.txt").symlink_to("missing.txt")  # not an image by its name: not a source entry
    bad_list = tmp_path / "logs" / "bad-images.tsv"
    report = scan_source(open_source(str(root)), min_side=0, max_bad_share=0.6, progress=False, bad_list=bad_list)
    assert report.total == 9 and len(report.good) == 4
    assert report.kinds == {"link": 4, "unreadable": 1}
    assert {Path(name).name for name, _, _ in report.bad} == {"broken.png", "a.jpg", "b.jpg", "up", "pipe.png"}
    rows = bad_list.read_text().splitlines()
    assert rows[0] == "name\tkind\treason" and len(rows) == 6
