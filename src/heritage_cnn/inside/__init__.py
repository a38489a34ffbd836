"""What the network learned: deconvnet, attributions, figures of filters and feature maps, sanity checks, class image synthesis."""
