"""Running training on Kubernetes: the PyTorchJob spec and builder, its runner, and CRD validation.

`pytorchjob` and `crd` are pure (no cluster, no kubernetes client); `runner` talks to the API server.
The library never imports kfp: KFP components call these functions.
"""
