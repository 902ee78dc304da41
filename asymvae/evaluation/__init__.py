"""Evaluation of a trained asymmetric decoder against the baseline VAE: metrics, data glue, report."""
