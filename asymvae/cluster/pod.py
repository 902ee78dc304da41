"""Who and where this process is when it runs in a Kubernetes pod (a pipeline step).

The compiled pipeline sets the pod's namespace, name and UID as environment variables through the downward
API (`kfp.kubernetes.use_field_path_as_env`), so a step creates its jobs next to itself and makes its pod
their owner. Outside a pod none of these exist.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from asymvae.cluster.jobspec import OwnerPod
from asymvae.config import ConfigError
from asymvae.kube import SERVICE_ACCOUNT_NAMESPACE

NAMESPACE_ENV = "ASYMVAE_NAMESPACE"
"""The pod's namespace (downward API `metadata.namespace`)."""
POD_NAME_ENV = "ASYMVAE_POD_NAME"
"""The pod's name (downward API `metadata.name`)."""
POD_UID_ENV = "ASYMVAE_POD_UID"
"""The pod's UID (downward API `metadata.uid`)."""
IMAGE_ENV = "ASYMVAE_IMAGE"
"""The image the step itself runs, which the pipeline sets on the train and deploy steps: the default image of
the training job's pods and of the deploy step's predictor."""


def own_namespace(env: Mapping[str, str] = os.environ, sa_file: Path = SERVICE_ACCOUNT_NAMESPACE) -> str | None:
    """This pod's namespace: the downward-API variable, else the service account's namespace file, else None."""
    if env.get(NAMESPACE_ENV):
        return env[NAMESPACE_ENV]
    if sa_file.is_file():
        return sa_file.read_text().strip() or None
    return None


def resolve_namespace(explicit: str, env: Mapping[str, str] = os.environ) -> str:
    """`explicit` when set, else this pod's namespace; ConfigError outside a pod with none given."""
    found = explicit or own_namespace(env)
    if not found:
        raise ConfigError(
            f"no namespace given and this is not a pod ({NAMESPACE_ENV} unset, no {SERVICE_ACCOUNT_NAMESPACE}): "
            "pass the namespace to run the job in"
        )
    return found


def own_pod(env: Mapping[str, str] = os.environ) -> OwnerPod | None:
    """This pod as an owner of the objects it creates, when the downward API gave its name and UID."""
    name, uid = env.get(POD_NAME_ENV), env.get(POD_UID_ENV)
    return OwnerPod(name, uid) if name and uid else None
