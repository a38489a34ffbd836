"""Photos and data sets: decoding, class folders, the duplicate-aware split, data checks, training augmentation, class-name lookup."""
