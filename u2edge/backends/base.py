"""The one small interface every backend implements."""

from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np

from ..processing import Preprocessing

__all__ = ["Backend"]


class Backend(abc.ABC):
    """Runs U-2-Net on preprocessed NCHW float32 batches and returns the fused map.

    Subclasses open their model in ``__init__`` and set ``preprocessing`` (what the model
    expects) and ``batch_size``: the fixed batch of the model, or None when it is dynamic.
    """

    suffixes: ClassVar[tuple[str, ...]] = ()
    name: ClassVar[str] = ""
    preprocessing: Preprocessing
    batch_size: int | None

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 -> (N, S, S) float32 fused sigmoid maps."""

    def describe(self) -> str:
        """One line naming the backend and where it runs."""
        return self.name

    def close(self) -> None:
        """Release what the backend holds; calling it twice is harmless."""
