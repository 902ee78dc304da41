"""A training's failure, recorded where a retried step looks first, so that a retry never trains again after it.

A pipeline step is retried whatever made it fail (KFP compiles `set_retry` into an Argo retryStrategy that
retries any failure). A retry is right after an infrastructure fault (the API server unreachable, the step's
pod stopped or lost) and wrong after the training itself failed (its job Failed, stopped at the restart limit,
or past its deadline): that would start the same failing training again on the same GPUs. The job cannot
carry that verdict: the runner deletes it at the restart limit and at the deadline, and the job belongs to
the step's pod, whose deletion takes it along. So the verdict is a small JSON file, `VERDICT`, in the run's
output location (a folder or an `s3://` prefix), written atomically; a retried step that finds it stops
before it creates anything.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from asymvae.cluster.errors import EarlierAttemptFailedError, JobFailedError, JobTimeoutError, JobVanishedError
from asymvae.storage import StorageError, open_store

log = logging.getLogger(__name__)

VERDICT = "training-failed.json"
"""The verdict's name inside the run's output location."""
FORMAT = "asymvae-training-verdict/1"


def refuse_after_failure(location: str) -> None:
    """Raise EarlierAttemptFailedError when an earlier attempt recorded a verdict in `location`."""
    store = open_store(location)
    if not store.exists(VERDICT):
        return
    try:
        found = json.loads(store.get(VERDICT))
    except ValueError:
        found = None
    if not isinstance(found, dict) or found.get("format") != FORMAT:
        log.warning("%s was not written by asymvae (no %s format): ignored", store.url(VERDICT), FORMAT)
        return
    raise EarlierAttemptFailedError(
        f"an earlier attempt of this step ran training job {found.get('job')} and it failed: "
        f"{found.get('message')} (recorded in {store.url(VERDICT)} at {found.get('at')}). A retry does not "
        f"train again after the training itself failed. Fix: remove the cause, then start a new run (or delete "
        f"{store.url(VERDICT)} to let this run try again)"
    )


@contextmanager
def recording_failure(location: str, job: str) -> Iterator[None]:
    """Within the block, a failure of the training itself (JobFailedError, JobTimeoutError; not a job that
    vanished) is recorded in `location` before it goes on; any other error records nothing."""
    try:
        yield
    except (JobFailedError, JobTimeoutError) as e:
        if not isinstance(e, JobVanishedError):
            _record(location, job, e)
        raise


def _record(location: str, job: str, error: JobFailedError | JobTimeoutError) -> None:
    lines = str(error).splitlines()
    verdict = {
        "format": FORMAT,
        "job": job,
        "error": type(error).__name__,
        "reason": error.reason if isinstance(error, JobFailedError) else "Timeout",
        "message": (lines[0] if lines else "")[:500],
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        store = open_store(location)
        if store.exists(VERDICT):  # not asymvae's (refuse_after_failure said so): never written over
            log.warning("%s exists: the failure is not recorded", store.url(VERDICT))
            return
        store.put(VERDICT, (json.dumps(verdict, indent=2) + "\n").encode())
    except StorageError as e:  # the failure itself matters more than its record
        log.warning("could not record the training's failure in %s (%s): a retry may train again", location, e)
        return
    log.info("recorded the training's failure in %s", store.url(VERDICT))
