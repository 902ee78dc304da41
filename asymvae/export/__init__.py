"""Export a trained VAE: diffusers folder, ONNX mask-conditioned decoder, Triton model repository; model card."""

from asymvae.errors import UserError


class ExportError(UserError, RuntimeError):
    """An export that cannot be made as asked (bad format, existing target, missing input); nothing was written."""
