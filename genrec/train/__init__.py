"""Training shared by every model family: losses, negative samplers and the trainer."""
