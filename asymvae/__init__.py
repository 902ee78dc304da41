"""asymvae: train the asymmetric VAE decoder of Stable Diffusion (arXiv 2306.04632) on your own images.

Layers, each importing only those below it (`|`: independent siblings that never import each other; checked
by import-linter, contracts in pyproject.toml):

- `cli` and `commands`: the `asymvae` command, one module per subcommand;
- the Kubeflow layer (`asymvae_components`, `asymvae_pipelines`), then `steps`: what each pipeline step does;
- `cluster` (training jobs on Kubernetes) | `serving` (KServe InferenceService, v2 client) | `export`
  (diffusers, ONNX, Triton, model card);
- `inpaint` | `evaluation` | `training` (loop, checkpoints, presets, torchrun launch);
- `losses` | `model` (build from a base VAE, every KL family);
- `data` (sources, validation, prepare to shards, streaming, sampler);
- `masks` | `storage` (local and object store) | `kube` (Kubernetes API helpers);
- `config` (typed configuration from YAML and `--set`), then `errors` (the user-error base class).
"""

__version__ = "0.1.0"
