"""Training losses: pixel, perceptual (LPIPS), adversarial (PatchGAN hinge) and KL."""
