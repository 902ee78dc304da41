"""LPIPS, loaded for real or not at all: a random backbone would train on a meaningless loss."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
from torch import nn

from asymvae.errors import UserError
from asymvae.extras import require
from asymvae.losses.config import LPIPSConfig

# torchvision's ImageNet weights that the lpips package downloads at construction.
_TORCHVISION_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


class LPIPSWeightsError(UserError, RuntimeError):
    """The perceptual loss's backbone weights cannot be loaded."""


def build_lpips(cfg: LPIPSConfig) -> nn.Module | None:
    """The frozen LPIPS network for `cfg`, or None when its weight is 0.

    Inputs are images in [-1, 1]; the output is (B, 1, 1, 1) distances.
    """
    if cfg.weight == 0:
        return None
    net = _standard(cfg.net) if cfg.variant == "standard" else _shift_tolerant(cfg.net)
    return net.eval().requires_grad_(False)


def _standard(net: str) -> nn.Module:
    import lpips

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return lpips.LPIPS(net=net, pretrained=True, pnet_rand=False, verbose=False)
    except Exception as e:  # URLError offline, HTTP errors, a corrupt cached file: all need the same fix
        target = Path(torch.hub.get_dir()) / "checkpoints" / _TORCHVISION_FILES[net]
        raise LPIPSWeightsError(
            f"LPIPS({net}) needs torchvision's ImageNet {net} weights and could not load them: {e}\n"
            f"Fix one of:\n"
            f"  - put {_TORCHVISION_FILES[net]} at {target} (download it once where there is network, "
            f"or set TORCH_HOME to a folder that has hub/checkpoints/{_TORCHVISION_FILES[net]});\n"
            f"  - use ST-LPIPS, whose weights ship with the package: --loss.lpips.variant shift_tolerant;\n"
            f"  - turn the perceptual loss off: --loss.lpips.weight 0"
        ) from e


def _shift_tolerant(net: str) -> nn.Module:
    stlpips = require("stlpips_pytorch.stlpips", "stlpips", "the shift-tolerant LPIPS (lpips variant shift_tolerant)")
    model = stlpips.LPIPS(net=net, variant="shift_tolerant", pretrained=False, verbose=False)
    path = Path(stlpips.__file__).parent / "weights" / "vST0.0" / f"{net}_shift_tolerant.pth"
    if not path.is_file():
        raise LPIPSWeightsError(f"ST-LPIPS weights missing at {path}; reinstall stlpips-pytorch")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=False)
    # The package loads with strict=False; insist that every parameter was covered. `lins.N` are
    # aliases of `linN`, so compare storages rather than names.
    loaded = {model.state_dict()[k].data_ptr() for k in state}
    missing = [k for k, p in model.named_parameters() if p.data_ptr() not in loaded]
    if missing:
        raise LPIPSWeightsError(f"ST-LPIPS weights at {path} do not cover {missing[:5]}")
    return model
