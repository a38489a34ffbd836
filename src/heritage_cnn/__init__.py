"""heritage-cnn: recognise, explain and draw elements of architectural heritage with a CNN.

`from heritage_cnn import Classifier` works; it is imported on first use, so `import heritage_cnn`
stays light (no torch until something needs it).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Classifier", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Classifier":
        from heritage_cnn.inference.classifier import Classifier

        return Classifier
    raise AttributeError(f"module 'heritage_cnn' has no attribute {name!r}")
