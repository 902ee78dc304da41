"""The container image every component (and the training job) runs: docker/Dockerfile, built by you.

No image is published: build one (`docker build -f docker/Dockerfile -t asymvae:0.1.0 .`), push it to a
registry your cluster pulls from, and name it with `--image` (`asymvae pipeline compile|submit|schedule|
run-local --image REGISTRY/asymvae:TAG`), which puts it in place of this default in the compiled YAML. The
default is the local tag that build command gives, which `run-local --runner docker` uses as it is.
"""

IMAGE = "asymvae:0.1.0"
