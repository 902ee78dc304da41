"""Gradient checkpointing for the asymmetric decoder.

diffusers' `AsymmetricAutoencoderKL.enable_gradient_checkpointing()` raises ValueError because the class
does not declare `_supports_gradient_checkpointing`, although `MaskConditionDecoder` has a checkpointed
forward path. We switch that path on directly, the way diffusers' ModelMixin does for supported classes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.checkpoint import checkpoint


def _checkpointed_call(module: torch.nn.Module, *args: Any) -> Any:
    # Non-reentrant checkpointing: works with frozen inputs and with dict outputs (the mask branch).
    return checkpoint(module.__call__, *args, use_reentrant=False)


def enable_gradient_checkpointing(module: torch.nn.Module) -> int:
    """Turn on activation checkpointing in every submodule that supports it; returns how many."""
    count = 0
    for sub in module.modules():
        if hasattr(sub, "gradient_checkpointing"):
            sub.gradient_checkpointing = True
            sub._gradient_checkpointing_func = _checkpointed_call
            count += 1
    if count == 0:
        raise ValueError(f"{type(module).__name__} has no gradient checkpointing path")
    return count
