"""The one small interface every backend implements."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from .._deps import available
from ..processing import Preprocessing

__all__ = ["Backend"]


class Backend(abc.ABC):
    """Runs U-2-Net on preprocessed NCHW float32 batches and returns the fused map.

    Subclasses open their model in ``__init__`` and set ``preprocessing`` (what the model
    expects) and ``batch_size``: the fixed batch of the model, or None when it is dynamic (then
    ``max_batch`` may bound it). A GPU backend whose frames are pre- and post-processed on the
    GPU (``u2edge.framepath``) sets ``gpu_frames`` and implements ``infer_frames``.
    """

    suffixes: ClassVar[tuple[str, ...]] = ()
    name: ClassVar[str] = ""
    requires: ClassVar[str] = ""  # the top-level module it runs on
    preprocessing: Preprocessing
    batch_size: int | None
    max_batch: int | None = None  # the largest batch a dynamic model takes; None: any
    gpu_frames: bool = False

    @classmethod
    def installed(cls) -> bool:
        """Whether the module it runs on is installed (checked without importing it)."""
        return available(cls.requires)

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 -> (N, S, S) float32 fused sigmoid maps."""

    def infer_frames(self, frames: Sequence[np.ndarray], *, rgb: bool = False) -> list[np.ndarray]:
        """HxWx3 uint8 frames -> HxW float32 masks, pre- and post-processed on the GPU."""
        raise NotImplementedError(f"{self.name} pre- and post-processes on the CPU")

    def describe(self) -> str:
        """One line naming the backend and where it runs."""
        return self.name

    def close(self) -> None:
        """Release what the backend holds; calling it twice is harmless."""
