"""What `asymvae inpaint` is asked to do, as files and settings: `InpaintOptions` (also its command-line options)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from asymvae.model.decode_speed import CompileMode, DecodeSpeed

if TYPE_CHECKING:  # images, torch and diffusers load when a run reads its files, not when options are parsed
    from asymvae.inpaint.request import InpaintRequest
    from asymvae.model.decode import TileConfig

__all__ = ["InpaintOptions"]


@dataclass
class InpaintOptions:
    """One inpainting run from files: the trained VAE, a pipeline folder, an image, a mask and prompts."""

    vae: str
    """The trained asymmetric VAE: a training export (`OUTPUT/step<N>`) or a diffusers VAE folder."""
    pipeline: str
    """A diffusers pipeline folder (save_pretrained or hub download) run as StableDiffusionInpaintPipeline,
    StableDiffusionXLInpaintPipeline, StableDiffusion3InpaintPipeline, FluxInpaintPipeline or FluxFillPipeline
    (by its model_index.json); a text-to-image folder of the family works too."""
    image: str
    """The image to edit."""
    mask: str
    """The mask image: white = hole to generate, black = keep."""
    prompt: list[str]
    """A prompt; repeat the flag for several prompts."""
    out: str
    """Folder for the PNGs (`prompt<i>_<j>.png`)."""
    num_images_per_prompt: int = 1
    """Images generated per prompt."""
    steps: int = 30
    """Denoising steps."""
    guidance_scale: float | None = None
    """Classifier-free guidance (default: the pipeline's own)."""
    strength: float | None = None
    """Re-noising strength, 1.0 = fully (default: the pipeline's own)."""
    seed: int = 0
    """Seed of the pipeline's random generator."""
    height: int | None = None
    """Output height (default: the image's, rounded down to 8, or 16 for SD3 and FLUX)."""
    width: int | None = None
    """Output width (default: the image's, rounded down like the height)."""
    tile: int | None = None
    """Decode in overlapping tiles of this many px, each conditioned on its crop (large images; default: whole)."""
    tile_overlap: int = 128
    """Pixels neighbouring tiles share (with `tile`)."""
    device: str | None = None
    """`cuda`, `cpu`, ... (default: cuda when available)."""
    compile: CompileMode = "off"
    """torch.compile the VAE's decoder for the final decode: `off`, `default`, `max-autotune-no-cudagraphs`,
    `reduce-overhead` or `max-autotune` (the last two with CUDA graphs). Same images up to rounding; the first
    decode compiles and takes longer (a minute or more on a released VAE). Not with `tile`. Whether it pays on a
    GPU is measured by benchmarks/decode_throughput.py."""
    channels_last: bool = False
    """Keep the decoder's conv weights in channels-last layout (measured by benchmarks/decode_throughput.py)."""

    def __post_init__(self) -> None:
        self.tiling  # noqa: B018 - a bad tile size fails here, before any model loads
        self.decode_speed  # noqa: B018 - and so does a bad compile mode
        if self.compile != "off" and self.tile is not None:
            raise ValueError(
                f"--compile {self.compile} with --tile {self.tile}: tiled decoding swaps the decoder's GroupNorms "
                "between passes and runs it eagerly, so compiling gains nothing; leave out one of them"
            )

    @property
    def tiling(self) -> TileConfig | None:
        """The tiled-decoding settings, or None for whole images."""
        from asymvae.model.decode import tile_option

        return tile_option(self.tile, self.tile_overlap)

    @property
    def decode_speed(self) -> DecodeSpeed:
        """The decoder's speed settings (`asymvae.model.decode_speed`)."""
        try:
            return DecodeSpeed(compile=self.compile, channels_last=self.channels_last)
        except ValueError as e:
            raise ValueError(f"--compile: {e}") from e

    def request(self) -> InpaintRequest:
        """The request these options describe, with image and mask read and checked."""
        from asymvae.inpaint.request import read_request

        return read_request(
            self.image,
            self.mask,
            self.prompt,
            num_images_per_prompt=self.num_images_per_prompt,
            steps=self.steps,
            guidance_scale=self.guidance_scale,
            strength=self.strength,
            seed=self.seed,
            height=self.height,
            width=self.width,
            tile=self.tiling,
        )
