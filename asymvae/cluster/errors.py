"""What can go wrong with a training job, in terms a pipeline step can report (no kubernetes import here)."""

from __future__ import annotations

from asymvae.errors import UserError


class TrainingJobError(UserError, RuntimeError):
    """A training job did not succeed; the message says which job, why, and what to do."""


class JobFailedError(TrainingJobError):
    """The job ended Failed (or vanished); carries the operator's reason and the master's last log lines."""

    def __init__(self, message: str, reason: str = "", logs: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.logs = logs


class JobVanishedError(JobFailedError):
    """The job disappeared while the runner waited (deleted by someone, or with an owner that went away): no
    verdict on the training itself."""


class JobTimeoutError(TrainingJobError):
    """The job did not finish before the runner's deadline (it was deleted unless cleanup is `never`)."""


class EarlierAttemptFailedError(TrainingJobError):
    """A retried step found the recorded failure of an earlier attempt's training; it started nothing."""


class KindNotServedError(TrainingJobError):
    """The cluster does not serve the job's kind (its CRD is not installed), so nothing was created."""


class JobConflictError(TrainingJobError):
    """A job of the same name exists and the on-exists policy does not allow taking it over."""


class JobInterrupted(TrainingJobError):
    """The step was told to stop (SIGTERM) while its job ran; the job was deleted so it frees its GPUs."""
