"""The network and its file format: the CNN, single-network and ensemble checkpoints, the views a model reads, the open-set operating point it carries."""
