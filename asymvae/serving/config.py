"""`ServeConfig`: what `asymvae serve` serves and how (also the command's options)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from asymvae.export.config import check_model_name

if TYPE_CHECKING:  # model.decode imports torch: `asymvae serve --help` must not
    from asymvae.model.decode import TileConfig

Device = Literal["auto", "cpu", "cuda"]
DEVICES = get_args(Device)


@dataclass
class ServeConfig:
    """The KServe predictor of the torch decoder."""

    model_dir: str
    """The exported diffusers folder (`asymvae export --format diffusers --out DIR`: DIR or DIR/vae), or a
    training export (`OUTPUT/step<N>`)."""
    name: str = "asymvae_decoder"
    """Model name in the v2 routes (`/v2/models/NAME/infer`): the name `asymvae infer --model` uses."""
    http_port: int = 8080
    """Port of the REST server (v1/v2 inference, health, `/metrics`), KServe's default."""
    grpc_port: int = 8081
    """Port of the gRPC server (v2 inference); 0: no gRPC server."""
    device: Device = "auto"
    """`cuda` (float16), `cpu` (float32) or `auto`: cuda when a GPU is visible."""
    tile_above: int = 1024
    """Images with a side longer than this many pixels decode in tiles (`--tile`, `--tile-overlap`), with
    GroupNorm statistics shared by all tiles, which bounds memory; smaller ones decode whole."""
    tile: int = 512
    """Side of a tile in pixels (a multiple of 8)."""
    tile_overlap: int = 128
    """Pixels neighbouring tiles share (a multiple of 8, below `--tile`)."""
    max_batch_size: int = 8
    """Most images decoded at once: requests that wait while a decode runs, and whose tensors have the same
    height and width, are decoded together as one batch of up to this many images."""

    def __post_init__(self) -> None:
        check_model_name(self.name)
        if self.device not in DEVICES:
            raise ValueError(f"--device {self.device!r}: choose one of {', '.join(DEVICES)}")
        for flag, value in (("--http-port", self.http_port), ("--grpc-port", self.grpc_port)):
            if not 0 <= value < 65536 or (flag == "--http-port" and value == 0):
                raise ValueError(f"{flag} {value}: give a port between 1 and 65535")
        if self.tile_above < 8:
            raise ValueError(f"--tile-above {self.tile_above}: give a side in pixels, at least 8")
        if self.max_batch_size < 1:
            raise ValueError(f"--max-batch-size {self.max_batch_size}: give 1 or more")
        from asymvae.model.decode import tile_option

        tile_option(self.tile, self.tile_overlap)  # a bad pair fails now, not at the first large request

    @property
    def tiling(self) -> TileConfig:
        """The tiles of a large image (see `tile_above`)."""
        from asymvae.model.decode import TileConfig

        return TileConfig(size=self.tile, overlap=self.tile_overlap)
