"""The container image every component (and the PyTorchJob) runs: docker/Dockerfile, built and pushed by you.

`asymvae pipeline compile --image REGISTRY/asymvae:TAG` compiles the pipeline for your registry (it
replaces this name in the YAML); the committed YAML uses it as is.
"""

IMAGE = "ghcr.io/asymvae/asymvae:0.1.0"
