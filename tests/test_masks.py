"""Tests of the LaMa-style inpainting mask generator (CPU, a couple of seconds in all)."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest
import torch

from asymvae import masks
from asymvae.masks import MaskConfig, make_mask, mask_tensor

STROKES = MaskConfig(full_mask_prob=0.0, stroke_prob=1.0)
BOXES = MaskConfig(full_mask_prob=0.0, stroke_prob=0.0)
PARTIAL = MaskConfig(full_mask_prob=0.0)


def _ratios(cfg: MaskConfig, size: int, n: int, seed: int = 0) -> np.ndarray:
    return np.array([make_mask(cfg, size, size, seed, i).mean() for i in range(n)])


def test_same_inputs_give_identical_mask_whatever_the_global_rng_state() -> None:
    first = [make_mask(PARTIAL, 64, 96, 3, i) for i in range(20)]
    # Workers and ranks seed their global generators differently; the mask must not see that.
    np.random.seed(123)
    random.seed(123)
    torch.manual_seed(123)
    np.random.rand(7)
    second = [make_mask(PARTIAL, 64, 96, 3, i) for i in range(20)]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    # The default mix (full masks included) is deterministic too.
    np.testing.assert_array_equal(make_mask(MaskConfig(), 64, 64, 5, 9), make_mask(MaskConfig(), 64, 64, 5, 9))


def test_different_index_or_seed_gives_different_masks() -> None:
    base = [make_mask(PARTIAL, 64, 64, 0, i) for i in range(30)]
    for i in range(29):
        assert not np.array_equal(base[i], base[i + 1]), f"indices {i} and {i + 1} share a mask"
    other_seed = [make_mask(PARTIAL, 64, 64, 1, i) for i in range(30)]
    for i in range(30):
        assert not np.array_equal(base[i], other_seed[i]), f"seeds 0 and 1 share the mask of index {i}"


@pytest.mark.parametrize("cfg", [STROKES, BOXES, MaskConfig()], ids=["strokes", "boxes", "default"])
@pytest.mark.parametrize(("height", "width"), [(64, 64), (48, 80), (80, 48), (256, 128)])
def test_mask_is_binary_float32_of_the_requested_shape(cfg: MaskConfig, height: int, width: int) -> None:
    for i in range(10):
        mask = make_mask(cfg, height, width, 0, i)
        assert mask.shape == (height, width)
        assert mask.dtype == np.float32
        assert set(np.unique(mask).tolist()) <= {0.0, 1.0}
    tensor = mask_tensor(cfg, height, width, 0, 3)
    assert tensor.shape == (1, height, width)
    assert tensor.dtype == torch.float32
    np.testing.assert_array_equal(tensor[0].numpy(), make_mask(cfg, height, width, 0, 3))


def test_non_square_masks_cover_the_whole_long_side() -> None:
    # Start points spread over each axis separately: holes must reach the far end of the long side.
    union = np.zeros((32, 160), dtype=bool)
    for i in range(100):
        union |= make_mask(PARTIAL, 32, 160, 0, i).astype(bool)
    assert union[:, 130:].any()
    assert union[:, :30].any()


@pytest.mark.parametrize(("height", "width"), [(1, 1), (3, 17), (8, 8), (17, 3)])
def test_tiny_images_still_get_partial_masks(height: int, width: int) -> None:
    for cfg in (STROKES, BOXES):
        for i in range(10):
            mask = make_mask(cfg, height, width, 0, i)
            assert mask.shape == (height, width)
            assert mask.sum() >= 1


def test_full_mask_share_follows_full_mask_prob() -> None:
    n = 400
    full = [make_mask(MaskConfig(), 32, 32, 0, i).min() == 1.0 for i in range(n)]
    # Binomial(400, 0.5) has a standard deviation of 0.025: ±0.08 is over 3 sigma.
    assert abs(np.mean(full) - 0.5) < 0.08
    assert all(make_mask(MaskConfig(full_mask_prob=1.0), 32, 32, 0, i).min() == 1.0 for i in range(50))
    never = MaskConfig(full_mask_prob=0.0)
    assert not any(make_mask(never, 32, 32, 0, i).min() == 1.0 for i in range(n))


def test_stroke_share_follows_stroke_prob(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"stroke": 0, "box": 0}

    def counted(kind: str, draw: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        def wrapper(*args: object, **kwargs: object) -> np.ndarray:
            calls[kind] += 1
            return draw(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(masks, "_stroke_mask", counted("stroke", masks._stroke_mask))
    monkeypatch.setattr(masks, "_box_mask", counted("box", masks._box_mask))
    for i in range(400):
        make_mask(MaskConfig(), 16, 16, 0, i)
    partial = calls["stroke"] + calls["box"]
    # About 200 partial masks (full_mask_prob=0.5): the stroke share's sigma is 0.03, ±0.1 is over 3 sigma.
    assert 150 < partial < 250
    assert abs(calls["stroke"] / partial - MaskConfig().stroke_prob) < 0.1


# Bands for the mean hole ratio at 256x256 (measured over 400 indices: strokes 0.43, boxes 0.21).
# Boxes can be checked by hand: a side is uniform on 30..150 px (mean 90), so one box covers
# 90² / 256² = 0.124 of the image on average; 1..3 boxes (mean 2) with some overlap give about 0.21.
# Strokes are LaMa's "thick" setting (up to 5 strokes of up to 5 segments, 5..104 px wide): 0.3..0.55.
@pytest.mark.parametrize(("cfg", "lo", "hi"), [(STROKES, 0.30, 0.55), (BOXES, 0.15, 0.28)], ids=["strokes", "boxes"])
def test_mean_hole_ratio_is_in_the_expected_band(cfg: MaskConfig, lo: float, hi: float) -> None:
    ratios = _ratios(cfg, 256, 200)
    assert lo < ratios.mean() < hi
    assert (ratios > 0).all(), "a partial mask has no hole"
    assert (ratios < 1).all(), "a partial mask is all ones"


@pytest.mark.parametrize("cfg", [STROKES, BOXES], ids=["strokes", "boxes"])
@pytest.mark.parametrize("size", [64, 512])
def test_hole_ratio_does_not_depend_on_resolution(cfg: MaskConfig, size: int) -> None:
    # Same indices at both sizes, so the comparison is paired: measured gaps are below 0.01. Without
    # scaling, 512 px strokes/boxes would cover about a quarter of the ratio at 256 px, and 64 px ones
    # would cover most of the image.
    n = 100 if size == 512 else 200
    reference = _ratios(cfg, 256, n)
    ratios = _ratios(cfg, size, n)
    assert abs(ratios.mean() - reference.mean()) < 0.03


def test_same_index_gives_the_same_shapes_at_every_resolution() -> None:
    # Random quantities are fractions of their range, so a 512 px mask is a 256 px mask scaled up.
    for i in range(10):
        small = make_mask(PARTIAL, 256, 256, 0, i).astype(bool)
        large = make_mask(PARTIAL, 512, 512, 0, i).reshape(256, 2, 256, 2).mean(axis=(1, 3)) >= 0.5
        iou = (small & large).sum() / (small | large).sum()
        assert iou > 0.9, f"index {i}: IoU {iou:.3f}"


@pytest.mark.parametrize(("height", "width", "margin"), [(256, 256, 10), (100, 160, 4), (64, 64, 3)])
def test_boxes_keep_out_of_the_margin(height: int, width: int, margin: int) -> None:
    # margin = box_margin * short side / 256, rounded half up: 10, 3.9 -> 4, 2.5 -> 3.
    union = np.zeros((height, width), dtype=bool)
    # At 256 px a box's left edge takes one of ~100 positions: 600 masks reach the first one.
    for i in range(600):
        mask = make_mask(BOXES, height, width, 0, i).astype(bool)
        assert not mask[:margin].any() and not mask[-margin:].any()
        assert not mask[:, :margin].any() and not mask[:, -margin:].any()
        union |= mask
    # Boxes do reach the first row/column inside the margin: the margin is exactly that wide.
    inner = union[margin:-margin, margin:-margin]
    assert inner[0].any() and inner[-1].any() and inner[:, 0].any() and inner[:, -1].any()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("full_mask_prob", 1.5),
        ("full_mask_prob", -0.1),
        ("full_mask_prob", float("nan")),
        ("stroke_prob", 2),
        ("stroke_count", (3, 1)),
        ("stroke_count", (0, 2)),
        ("stroke_vertices", (1,)),
        ("stroke_width", (5.0, 10.0)),
        ("stroke_length", (-1, 10)),
        ("stroke_max_angle", -1.0),
        ("box_count", (2, 1)),
        ("box_size", (0, 10)),
        ("box_margin", -1),
        ("reference_resolution", 0),
    ],
)
def test_invalid_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"masks\\.{field}"):
        MaskConfig(**{field: value})


def test_config_accepts_yaml_lists() -> None:
    cfg = MaskConfig(stroke_width=[2, 8], box_size=[10, 20])
    assert cfg.stroke_width == (2, 8)
    assert cfg.box_size == (10, 20)


@pytest.mark.parametrize(
    ("args", "name"), [((0, 8, 0, 0), "height"), ((8, 8, -1, 0), "seed"), ((8, 8, 0, -2), "index")]
)
def test_invalid_call_arguments_are_rejected(args: tuple[int, int, int, int], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make_mask(MaskConfig(), *args)
