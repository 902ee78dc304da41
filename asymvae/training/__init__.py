"""The training loop and what it needs: schedule, checkpoints, export, launch under torchrun."""
