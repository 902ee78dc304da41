"""Errors that are the user's to fix: the CLI prints their message (what, where, how to fix), no traceback."""

from asymvae.cluster.errors import TrainingJobError
from asymvae.config import ConfigError
from asymvae.data.sources import DataSourceError
from asymvae.export import ExportError
from asymvae.inpaint import InpaintInputError
from asymvae.losses.perceptual import LPIPSWeightsError
from asymvae.model.build import ModelSourceError
from asymvae.storage import StorageError
from asymvae.training.trainer import NonFiniteLossError

USER_ERRORS = (
    ConfigError,
    DataSourceError,
    ModelSourceError,
    LPIPSWeightsError,
    NonFiniteLossError,
    TrainingJobError,
    StorageError,
    ExportError,
    InpaintInputError,
)
