"""One optimiser update of the VAE (`Update`) and what it needs, built top-down once (`build_update`: the
model, then the losses, then the optimisers): shared by the trainer and by benchmarks/train_throughput.py.
(Not to be confused with the pipeline steps of `asymvae.steps`.)

Speed settings (measured in benchmarks/RESULTS.md):
- the frozen encoder runs outside the DDP module, under no_grad; the decoder and the reconstruction
  loss are compiled with static shapes (`train.compile`), so norms and activations fuse and the
  posterior sample, which broke compilation in diffusers' own path, stays in eager code;
- channels-last layout for images and conv weights (`train.channels_last`), which pays with compile;
- frozen LPIPS weights in the autocast dtype; fused AdamW; no host sync inside a step.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from asymvae.losses.discriminator import PatchDiscriminator
from asymvae.losses.objective import Objective
from asymvae.losses.perceptual import build_lpips
from asymvae.model.build import VAE, build_vae
from asymvae.model.trainable import Reconstructor
from asymvae.training.experiment import ExperimentConfig
from asymvae.training.schedule import build_scheduler

log = logging.getLogger(__name__)


def posterior_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """The seed of the posterior noise of one micro-step: a function of (seed, step, micro-step, rank) only,
    so a resumed run draws exactly the noise an uninterrupted one would."""
    key = ((seed * 1_000_003 + step) * 4099 + micro) * 65_537
    return (key + rank) % 2**63


def speed_switch(value: str, default: bool) -> bool:
    """Resolve an `auto|on|off` setting."""
    return default if value == "auto" else value == "on"


def build_update(cfg: ExperimentConfig, accelerator: Accelerator, pretrained: str | None = None) -> Update:
    """Load the model to train (`pretrained` replaces `model.pretrained`) and the perceptual network, then
    build the update around them (losses, then optimisers)."""
    source = pretrained or cfg.model.pretrained
    if source:
        log.info("loading base model from %s", source)
    else:
        log.info("building the model from scratch (model.pretrained is unset)")
    vae = build_vae(cfg.model, pretrained)
    if cfg.loss.lpips.weight:
        log.info("loading the perceptual loss (LPIPS %s, %s)", cfg.loss.lpips.net, cfg.loss.lpips.variant)
    return Update(cfg, accelerator, vae, build_lpips(cfg.loss.lpips))


class Update:
    """One optimiser update: the model, the losses, the optimisers and LR schedule, and `__call__` for one
    micro-step.

    Build (`build_update`, or with a model and LPIPS of one's own), then `prepare()` once (wraps in DDP through
    accelerate and compiles), then call per batch.
    """

    def __init__(
        self, cfg: ExperimentConfig, accelerator: Accelerator, vae: VAE, lpips: nn.Module | None = None
    ) -> None:
        """`lpips` is the frozen perceptual network (from `losses.perceptual.build_lpips`), or None."""
        self.cfg, self.accelerator = cfg, accelerator
        t, o = cfg.train, cfg.optim
        acc = accelerator
        on_gpu = acc.device.type == "cuda"
        self.compiled = speed_switch(str(t.compile), on_gpu)
        # Measured on an H200 (benchmarks/RESULTS.md): compiled NCHW beat compiled channels-last, so `auto` is off.
        self.channels_last = speed_switch(str(t.channels_last), False)
        self.cudagraphs = self.compiled and t.compile_mode in ("reduce-overhead", "max-autotune")
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.mixed_precision)

        # The model.
        self.model = Reconstructor(vae, cfg.model.sample_posterior)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.inner = self.model
        self.forward: nn.Module = self.model
        self._moments = self.model.moments

        # The losses.
        if lpips is not None:
            # Frozen and never saved: keep it in the autocast dtype instead of casting its weights every step.
            lpips = lpips.to(acc.device, dtype=self.autocast_dtype or torch.float32)
            lpips = lpips.to(memory_format=self.memory_format)
        self.objective = Objective(cfg.loss, lpips)
        self.disc: nn.Module | None = None
        if cfg.loss.gan.enabled:
            g = cfg.loss.gan
            self.disc = PatchDiscriminator(3, g.channels, g.layers)

        # The optimisers.
        global_batch = t.batch_size * acc.num_processes * t.grad_accum
        self.images_per_step = global_batch
        peak_lr = o.lr * (global_batch if o.scale_lr else 1)
        self.optimizer = torch.optim.AdamW(
            self.params, lr=peak_lr, betas=o.betas, weight_decay=o.weight_decay, eps=o.eps, fused=on_gpu
        )
        self.scheduler = build_scheduler(self.optimizer, o, t.max_steps, peak_lr)
        self.disc_optimizer: torch.optim.Optimizer | None = None
        if self.disc is not None:
            self.disc_optimizer = torch.optim.AdamW(self.disc.parameters(), lr=peak_lr, betas=o.betas, fused=on_gpu)

    def prepare(self) -> None:
        """Move to the device, wrap in DDP (accelerate) and compile; call once, before the first step."""
        acc = self.accelerator
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.disc is not None:
            self.model, self.optimizer, self.disc, self.disc_optimizer = acc.prepare(
                self.model, self.optimizer, self.disc, self.disc_optimizer
            )
        else:
            self.model, self.optimizer = acc.prepare(self.model, self.optimizer)
        self.inner = inner = acc.unwrap_model(self.model)
        self.forward, self._moments = self.model, inner.moments
        if self.compiled:
            # Static shapes: every batch has the same size (the samplers drop the ragged tail).
            # The DDP module is compiled whole so dynamo's DDP optimizer keeps gradient buckets overlapped.
            mode = None if self.cfg.train.compile_mode == "default" else self.cfg.train.compile_mode
            self.forward = torch.compile(self.model, dynamic=False, mode=mode)
            if not inner.trains_encoder:
                self._moments = torch.compile(inner.moments, dynamic=False, mode=mode)
            log.info("compiling the decoder, encoder and loss (the first step will be slow: a minute or two)")
            self.objective.compile(mode)

    def __call__(self, pixels: torch.Tensor, mask: torch.Tensor, step: int, micro: int) -> dict[str, torch.Tensor]:
        """One micro-step on a batch already on the device; returns the loss terms as detached tensors.

        `step` is the optimizer step about to be taken; `micro` the micro-step within it.
        """
        acc, cfg = self.accelerator, self.cfg
        inner = self.inner
        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()  # CUDA graphs: this step may overwrite the last one's outputs
        pixels = pixels.contiguous(memory_format=self.memory_format)
        mask = mask.contiguous(memory_format=self.memory_format)
        gan_on = self.disc is not None and step >= cfg.loss.gan.start_step
        models = (self.model, self.disc) if self.disc is not None else (self.model,)
        gen = torch.Generator(acc.device).manual_seed(
            posterior_seed(cfg.train.seed, step, micro % cfg.train.grad_accum, acc.process_index)
        )
        latents = None
        if not inner.trains_encoder:
            with torch.no_grad(), acc.autocast():
                latents = inner.latents(self._moments(pixels), gen)
        with acc.accumulate(*models):
            with acc.autocast():
                # No generator into the compiled graph when it is not used there: a new object per step
                # would be a new guard, and a recompile, every step.
                rec, kl = self.forward(pixels, mask, latents, gen if latents is None else None)
            disc = acc.unwrap_model(self.disc) if gan_on else None
            if disc is not None:
                disc.requires_grad_(False)
            last_layer = inner.last_layer() if gan_on else None
            with acc.autocast():
                loss, terms = self.objective.generator(rec, pixels, kl, disc, last_layer)
            acc.backward(loss)
            if acc.sync_gradients and cfg.optim.max_grad_norm:
                terms["grad_norm"] = acc.clip_grad_norm_(self.params, cfg.optim.max_grad_norm)
            self.optimizer.step()
            if acc.sync_gradients:
                self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            if gan_on:
                self.disc.requires_grad_(True)
                with acc.autocast():
                    d_loss, d_terms = self.objective.discriminator(self.disc, rec, pixels)
                acc.backward(d_loss)
                self.disc_optimizer.step()
                self.disc_optimizer.zero_grad(set_to_none=True)
                terms.update(d_terms)
        return terms

    def describe(self) -> dict[str, Any]:
        """The speed settings in effect (for logs and benchmark reports)."""
        return {
            "compile": self.compiled,
            "channels_last": self.channels_last,
            "compile_mode": self.cfg.train.compile_mode if self.compiled else None,
            "autocast": str(self.autocast_dtype).removeprefix("torch.") if self.autocast_dtype else "fp32",
            "fused_adamw": self.accelerator.device.type == "cuda",
        }
