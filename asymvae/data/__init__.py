"""Training data: sources, image decoding and validation, transforms and the resumable sampler."""
