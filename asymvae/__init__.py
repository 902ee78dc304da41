"""asymvae: train the asymmetric VAE decoder of Stable Diffusion (arXiv 2306.04632) on your own images.

Layers, in data-flow order: `data` (sources, validation, crops, sampler) and `masks` -> `model` (build
from a base VAE) -> `losses` -> `training` (loop, checkpoints, export, torchrun launch). `cli` wires them
to the `asymvae` command; `config` and `presets` hold the typed configuration.
"""

__version__ = "0.1.0"
