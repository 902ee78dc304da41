"""The VAE: configuration, construction from a base model, and training-time wrapper."""
