"""Uniform random-access view of where training images come from (`open_source`).

`open_source(spec)` understands:

* `builtin:demo` (optionally `builtin:demo?count=96&size=256&seed=0`): crops of photos shipped with
  scikit-image, see `asymvae.data.demo_images`; needs no network.
* a local folder, recognised by its content, in this order:
  - `dataset_dict.json`: a `DatasetDict.save_to_disk` folder (the `split` is picked);
  - `dataset_info.json` + `state.json`: a `Dataset.save_to_disk` folder (`split` is ignored);
  - `*.parquet` files anywhere below it (e.g. `data/train-00000-of-00001.parquet`, the layout of a
    downloaded hub repository): splits are inferred from file names as `datasets` does;
  - otherwise plain image files, found recursively (hidden files/folders and `__MACOSX` skipped). A
    Hugging Face "imagefolder" (images plus `metadata.jsonl`/`metadata.csv`) is read this way too: the
    metadata only holds captions/labels, which the VAE does not need, and reading files directly lets
    corrupt ones be reported instead of breaking the load. If the folder has split subfolders (`train/`
    next to `test/`, `validation/`, `valid/`, `val/` or `dev/`), only the `split` subfolder is used.
* a single `.parquet` file;
* anything else that is not an existing path: a Hugging Face hub dataset id (`datasets.load_dataset`),
  unless it looks like a path (starts with `/`, `./`, `../` or `~`, ends with `/`, has two `/`, or is
  `folder/name` below an existing local folder): then it is a missing folder, said at once.

Sources return raw, undecoded images (`load(i)`); `asymvae.data.images.decode_image` validates and converts
them. `asymvae.data.scan.scan_source` does that once up front for every image and keeps the usable indices.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from asymvae.data.demo_images import DemoSource
from asymvae.data.image_source import DataSourceError, FolderSource, HFDatasetSource, ImageSource
from asymvae.data.images import BadImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataSourceError",
    "FolderSource",
    "HFDatasetSource",
    "ImageSource",
    "open_source",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
BUILTIN_SOURCES = ("builtin:demo",)
# Column names that hold images in common datasets whose image column is not typed as `datasets.Image`
# (webdataset-style parquet uses the file extension as the column name).
_IMAGE_COLUMN_NAMES = ("image", "img", "picture", "png", "jpg", "jpeg", "webp", "photo")
_SPLIT_DIR_PARTNERS = ("test", "validation", "valid", "val", "dev")
_SKIPPED_DIRS = frozenset({"__MACOSX"})


# ----------------------------------------------------------------------------------------------------------
# Opening


def open_source(
    spec: str, split: str = "train", image_column: str | None = None, max_samples: int | None = None
) -> ImageSource:
    """Opens a source of training images (see the module docstring for the accepted `spec`s).

    `image_column` names the image column of a dataset (found automatically when None); `max_samples`
    keeps only the first N images. Raises `DataSourceError` with a fix when the source cannot be used.
    """
    if max_samples is not None and max_samples <= 0:
        raise DataSourceError(f"data.max_samples must be positive or unset, got {max_samples}")
    spec = spec.strip()
    if not spec:
        raise DataSourceError("data.source is empty: set it to a folder, a hub dataset id or builtin:demo")
    if spec.startswith("builtin:"):
        source = _open_builtin(spec)
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            source = _open_folder(path, split, image_column)
        elif path.is_file():
            source = _open_file(path, split, image_column)
        elif _looks_like_path(spec) or path.exists():
            raise DataSourceError(
                f"data.source {spec!r}: no such folder ({path.resolve()}"
                + (f"; {path.parent.resolve()} exists" if "/" in spec.rstrip("/") and path.parent.is_dir() else "")
                + "). Fix: point data.source at an existing folder of images or a save_to_disk / parquet folder, "
                "or use a hub dataset id (owner/name, from a folder without an `owner` folder in it)."
            )
        else:
            source = _open_hub(spec, split, image_column)
    if max_samples is not None and max_samples < len(source):
        source = source.head(max_samples)
    return source


def _looks_like_path(spec: str) -> bool:
    # Hub ids are `name` or `owner/name`; anything else that is not on disk is a mistyped path, and so is
    # `folder/name` below an existing local folder (a hub id would be tried, and retried, for nothing).
    if spec.startswith(("/", "./", "../", "~", "\\")) or spec in (".", "..") or spec.endswith("/"):
        return True
    if "\\" in spec or spec.count("/") > 1 or (spec.count("/") == 1 and Path(spec.split("/")[0]).is_dir()):
        return True
    return len(spec) >= 2 and spec[1] == ":" and spec[0].isalpha()  # C:\... on Windows


def _open_builtin(spec: str) -> ImageSource:
    parts = urlsplit(spec)
    base = f"{parts.scheme}:{parts.path}"
    if base != "builtin:demo":
        raise DataSourceError(f"data.source {spec!r}: unknown built-in source; available: {BUILTIN_SOURCES}")
    options = {"count": 96, "size": 256, "seed": 0}
    for key, values in parse_qs(parts.query, keep_blank_values=True).items():
        if key not in options:
            raise DataSourceError(f"data.source {spec!r}: unknown option {key!r}; options: {sorted(options)}")
        try:
            options[key] = int(values[-1])
        except ValueError as e:
            raise DataSourceError(f"data.source {spec!r}: option {key} must be an integer") from e
    if options["count"] <= 0 or options["size"] <= 0:
        raise DataSourceError(f"data.source {spec!r}: count and size must be positive")
    return DemoSource(**options)


def _open_file(path: Path, split: str, image_column: str | None) -> ImageSource:
    if path.suffix.lower() == ".parquet":
        return _load_parquet([path], path, split, image_column)
    raise DataSourceError(
        f"data.source {str(path)!r} is a file; expected a folder (of images, or made by save_to_disk), "
        "a .parquet file, a hub dataset id or builtin:demo"
    )


def _unlistable(path: Path, error: OSError) -> DataSourceError:
    return DataSourceError(
        f"data.source {str(path)!r}: cannot list the folder ({error.strerror}). Fix: give this user read and "
        "execute permission on it, or point data.source at a folder it can read."
    )


def _open_folder(path: Path, split: str, image_column: str | None) -> ImageSource:
    try:
        is_dict = (path / "dataset_dict.json").is_file()
        is_saved = (path / "dataset_info.json").is_file() and (path / "state.json").is_file()
        os.listdir(path)
    except OSError as e:
        raise _unlistable(path, e) from e
    if is_dict or is_saved:
        return _load_saved(path, split, image_column, is_dict=is_dict)
    parquet = sorted(p for p in _walk(path)[0] if p.suffix.lower() == ".parquet")
    if parquet:
        return _load_parquet(parquet, path, split, image_column)
    root = _split_subfolder(path, split)
    files, faults = _walk(root)
    images = sorted([p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS] + list(faults))
    if not images:
        raise DataSourceError(
            f"data.source {str(path)!r}: the folder contains no image files "
            f"({', '.join(sorted(IMAGE_EXTENSIONS))}) and is not a datasets folder (no dataset_dict.json, "
            "dataset_info.json or *.parquet). Fix: point data.source at the folder that holds the images."
        )
    where = str(root) if root == path else f"{path} (split subfolder {root.name!r})"
    unreadable = f", {len(faults)} unreadable entries" if faults else ""
    return FolderSource(images, f"image folder {where} ({len(images)} files{unreadable})", path, faults)


def _walk(root: Path) -> tuple[list[Path], dict[Path, BadImageError]]:
    """Files below root, and the entries that cannot be read at all, by path.

    Symlinked folders are followed, each real folder once; hidden entries and macOS zip debris are
    skipped. A folder that cannot be listed, a link to a folder already read (a loop, or a second way to
    the same folder) and a broken or looping link that may have been an image (an image extension or
    none, like a folder's name) are faults: reported and counted as bad images, never dropped silently.
    """
    files: list[Path] = []
    faults: dict[Path, BadImageError] = {}
    read: dict[str, Path] = {}

    def unlistable(error: OSError) -> None:
        faults[Path(error.filename)] = BadImageError(f"cannot list folder: {error.strerror}", "folder")

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=unlistable):
        here = Path(dirpath)
        real = os.path.realpath(dirpath)
        if real in read:
            loop = here.is_relative_to(read[real])
            what = "a link loop: leads back to" if loop else "a second way to"
            faults[here] = BadImageError(f"{what} {read[real]}, whose files are read once, there", "link")
            dirnames[:] = []
            continue
        read[real] = here
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIPPED_DIRS)
        for name in filenames:
            if name.startswith("."):  # includes macOS "._x.jpg" resource forks, which are not images
                continue
            path = here / name
            fault = _link_fault(path)
            if fault is None:
                files.append(path)
            elif path.suffix.lower() in IMAGE_EXTENSIONS or not path.suffix:
                faults[path] = fault
    return files, faults


def _link_fault(path: Path) -> BadImageError | None:
    """Why `path` cannot be read at all (a broken or looping link, not a regular file), else None."""
    try:
        st = path.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            return BadImageError("symbolic link loop", "link")
        target = os.readlink(path) if path.is_symlink() else "?"
        return BadImageError(f"broken link to {target} ({e.strerror})", "link")
    if not stat.S_ISREG(st.st_mode):  # a fifo would block the reader forever
        return BadImageError("not a regular file", "unreadable")
    return None


def _split_subfolder(path: Path, split: str) -> Path:
    subdirs = {p.name.lower(): p for p in path.iterdir() if p.is_dir()}
    if "train" not in subdirs or not any(s in subdirs for s in _SPLIT_DIR_PARTNERS):
        return path
    if split.lower() in subdirs:
        return subdirs[split.lower()]
    splits = sorted(s for s in subdirs if s == "train" or s in _SPLIT_DIR_PARTNERS)
    raise DataSourceError(
        f"data.source {str(path)!r} has split subfolders {splits} but none named {split!r}. "
        f"Fix: --data.split <one of {splits}>."
    )


def _load_saved(path: Path, split: str, image_column: str | None, is_dict: bool) -> ImageSource:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DataSourceError(
            f"data.source {str(path)!r} looks like a save_to_disk folder but cannot be loaded: "
            f"{type(e).__name__}: {e}. Fix: re-create it with Dataset.save_to_disk or "
            f"DatasetDict.save_to_disk (datasets {datasets.__version__})."
        ) from e
    if isinstance(loaded, datasets.DatasetDict):
        loaded = _pick_split(loaded, split, str(path))
    else:
        split = str(loaded.split) if loaded.split is not None else split
    return _dataset_source(loaded, image_column, label=str(path), split=split, base_dir=path)


def _load_parquet(files: list[Path], path: Path, split: str, image_column: str | None) -> ImageSource:
    import datasets

    try:
        if path.is_dir():
            # data_dir makes datasets infer splits from file names (train-*.parquet, data/test/...).
            loaded = datasets.load_dataset("parquet", data_dir=str(path))
        else:
            loaded = datasets.load_dataset("parquet", data_files={"train": [str(f) for f in files]})
    except Exception as e:
        raise DataSourceError(
            f"data.source {str(path)!r}: cannot read its parquet files ({len(files)} found, e.g. "
            f"{files[0]}): {type(e).__name__}: {e}. Fix: check that they are valid parquet files with one "
            "schema."
        ) from e
    dataset = _pick_split(loaded, split, str(path))
    return _dataset_source(dataset, image_column, label=str(path), split=split, base_dir=path)


def _pick_split(dataset_dict: Any, split: str, where: str) -> Any:
    if split not in dataset_dict:
        available = sorted(dataset_dict.keys())
        raise DataSourceError(
            f"data.source {where!r} has no split {split!r}; available splits: {available}. "
            f"Fix: --data.split <one of {available}>."
        )
    return dataset_dict[split]


def _open_hub(spec: str, split: str, image_column: str | None) -> ImageSource:
    import datasets

    try:
        dataset = datasets.load_dataset(spec, split=split)
    except Exception as e:
        offline = bool(datasets.config.HF_HUB_OFFLINE)
        raise DataSourceError(
            f"data.source {spec!r} is not a local path, so it was loaded as a Hugging Face hub dataset id "
            f"(split {split!r}), which failed: {type(e).__name__}: {e}\n"
            "Fix, depending on the cause:\n"
            f"  - a typo in the id or split: check https://huggingface.co/datasets/{spec} and data.split;\n"
            "  - no network: run where the hub is reachable, or download once and reuse the cache with "
            f"HF_HUB_OFFLINE=1 (offline mode is {'on' if offline else 'off'} now);\n"
            "  - gated/private dataset: log in with `hf auth login` or set HF_TOKEN;\n"
            "  - or use local data: a folder of images, or a folder made with "
            "datasets' `save_to_disk` (data.source=/path/to/folder)."
        ) from e
    if isinstance(dataset, datasets.IterableDataset):
        raise DataSourceError(f"data.source {spec!r} loaded as a streaming dataset; random access is needed")
    return _dataset_source(dataset, image_column, label=spec, split=split, base_dir=None)


def _dataset_source(
    dataset: Any, image_column: str | None, label: str, split: str, base_dir: Path | None
) -> HFDatasetSource:
    import datasets

    features = dataset.features
    columns = list(features)
    if image_column is not None:
        if image_column not in features:
            raise DataSourceError(
                f"data.source {label!r}: no column {image_column!r}; columns: {columns}. "
                "Fix: --data.image-column <one of these>, or unset it to detect the image column."
            )
        column = image_column
    else:
        column = _find_image_column(features)
        if column is None:
            raise DataSourceError(
                f"data.source {label!r}: cannot tell which column holds the images (none is typed "
                f"datasets.Image or named like {list(_IMAGE_COLUMN_NAMES)}); columns: "
                + ", ".join(f"{c} ({_feature_type(features[c])})" for c in columns)
                + ". Fix: --data.image-column <name>."
            )
    feature = features[column]
    if isinstance(feature, datasets.Image):
        # Raw bytes instead of decoded images: a corrupt row then becomes one reported bad image instead
        # of an exception from deep inside datasets.
        dataset = dataset.cast_column(column, datasets.Image(decode=False))
    elif not _is_raw_image_feature(feature):
        raise DataSourceError(
            f"data.source {label!r}: column {column!r} is {_feature_type(feature)}, not images (expected "
            "datasets.Image, binary bytes or file-path strings). Fix: --data.image-column <image column>."
        )
    return HFDatasetSource(dataset, column, label, split, base_dir)


def _find_image_column(features: Any) -> str | None:
    import datasets

    for name, feature in features.items():
        if isinstance(feature, datasets.Image):
            return name
    for wanted in _IMAGE_COLUMN_NAMES:
        for name, feature in features.items():
            if name.lower() == wanted and _is_raw_image_feature(feature):
                return name
    return None


def _is_raw_image_feature(feature: Any) -> bool:
    import datasets

    if isinstance(feature, datasets.Value):
        return feature.dtype in ("binary", "large_binary", "string", "large_string")
    # {"bytes": ..., "path": ...} structs, e.g. parquet written without datasets' feature metadata.
    return isinstance(feature, dict) and set(feature) <= {"bytes", "path"} and "bytes" in feature


def _feature_type(feature: Any) -> str:
    return getattr(feature, "dtype", None) or type(feature).__name__
