"""Kubeflow pipelines of asymvae (built from components/)."""
