"""The container image every component (and the PyTorchJob) runs: docker/Dockerfile, built and pushed by you.

Set ASYMVAE_IMAGE before importing the components (or pass `asymvae pipeline compile --image`) to compile
the pipeline for your registry; the committed YAML uses the default.
"""

import os

DEFAULT_IMAGE = "ghcr.io/asymvae/asymvae:0.1.0"
IMAGE = os.environ.get("ASYMVAE_IMAGE", DEFAULT_IMAGE)
