"""Training a network: the recipe, the loop, run state and resume, losses, optimizers, distributed data parallel."""
