"""Kubeflow Pipelines components of asymvae: one folder per step, each a thin KFP wrapper over the library."""
