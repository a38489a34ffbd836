"""The replayed photos' pooled features, kept between `heritage teach` runs (`--cache-dir`).

With `--data`, three quarters of a teach is one forward pass of every replayed photo, as is and mirrored, through
the parent's convolutions (51 of 68 s for `default` and the 8,104 Kaggle photos on two cores, under the profiler).
Teach never changes the convolutions, so every model of a chain of teaches has the same features for the same
photos: teaching one parent again (another seed, a bound, other new classes) or its taught child (corrections after
corrections) with the same `--data` reads them back. A replay set that changed (the photos of a class taught since,
added to `--data`) is another key: computed once more.

The key is everything the features depend on: the convolutional weights of every network (the heads are left out:
they are what teach replaces), the photos' pixels, the layer, and where the float32 arithmetic ran (torch's version,
the CPU model, the instruction sets allowed and the device: another machine's kernels round differently, so it
computes afresh, as the fit promises the same model for the same inputs on one machine). A file that does not read
back as the features of this key (cut short, edited, another shape, NaN) is computed again and replaced, never used.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch

from heritage_cnn.base.devices import cpu_model
from heritage_cnn.base.io import CheckpointError, read_safetensors, save_tensors
from heritage_cnn.inference.classifier import Classifier, network_features
from heritage_cnn.models.ensemble import networks
from heritage_cnn.models.openset_point import network_id

FORMAT = "heritage-cnn-teach-features/1"
TENSOR = "features"
HEADER_ROOM = 2**16  # bytes of a cache file beyond its tensor: safetensors' JSON header with the key


def cache_key(classifier: Classifier, images: torch.Tensor, layer: str) -> str:
    """A digest of the convolutional weights (head excluded), the photos, the layer and the arithmetic."""
    where = (
        f"{torch.__version__}|{cpu_model()}|{torch.backends.cpu.get_cpu_capability()}|"
        f"{os.environ.get('ONEDNN_MAX_CPU_ISA', '')}|{classifier.device}"
    )
    digest = hashlib.sha256(f"{FORMAT}|{layer}|{where}|".encode())
    for net in networks(classifier.checkpoint.model):
        digest.update(network_id({k: v for k, v in net.state_dict().items() if not k.startswith("head.")}).encode())
    photos = images.detach().cpu().contiguous()
    digest.update(f"{tuple(photos.shape)}|".encode())
    digest.update(photos.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


def cached_features(
    classifier: Classifier,
    images: torch.Tensor,
    layer: str,
    cache_dir: str | os.PathLike | None,
    log: Callable[[str], None] = print,
) -> torch.Tensor:
    """`network_features(classifier, images, layer)`, read from `cache_dir` when it holds them for this key, else
    computed and stored there (atomically). Without `cache_dir`, computed."""
    if cache_dir is None:
        return network_features(classifier, images, layer)
    key = cache_key(classifier, images, layer)
    path = Path(cache_dir) / f"teach-features-{key}.safetensors"
    nets = networks(classifier.checkpoint.model)
    expected = (len(nets), len(images))
    if path.exists():
        try:
            # read no more than the features can take (float32), whatever the file's size claims
            most = len(nets) * len(images) * nets[0].get_submodule(layer).in_features * 4 + HEADER_ROOM
            if path.stat().st_size > most:
                raise CheckpointError(f"{path}: larger than the features of these photos can be")
            tensors, metadata = read_safetensors(path)
            features = tensors.get(TENSOR)
            if metadata.get("key") != key or features is None or tuple(features.shape[:2]) != expected:
                raise CheckpointError(f"{path}: not the features of these photos and networks")
            if features.dtype != torch.float32 or not bool(torch.isfinite(features).all()):
                raise CheckpointError(f"{path}: features are not finite float32 values")
            log(f"--cache-dir: the replayed photos' features read from {path}")
            return features
        except CheckpointError as error:
            log(f"--cache-dir: {error}; computing them again")
    features = network_features(classifier, images, layer)
    save_tensors(path, {TENSOR: features}, {"format": FORMAT, "key": key})
    return features


__all__ = ["cache_key", "cached_features"]
