"""The one small interface every backend implements."""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Optional, Tuple

import numpy as np

from .._deps import available
from ..errors import ModelFormatError
from ..processing import Preprocessing

__all__ = ["Backend", "Tensor"]

Tensor = Tuple[str, Tuple[Optional[int], ...]]  # a graph input or output: name, shape (None: dynamic)


class Backend(abc.ABC):
    """Runs U-2-Net on preprocessed NCHW float32 batches and returns the fused map.

    Subclasses open their model in ``__init__`` and hand its inputs, outputs and metadata to
    ``bind``, which checks that the graph is U-2-Net's and sets ``input_name``, ``output_name``,
    ``batch_size`` (the model's fixed batch, or None when it is dynamic: then ``max_batch`` may
    bound it) and ``preprocessing``. A GPU backend whose frames are pre- and post-processed on the
    GPU (``u2edge.framepath``) sets ``gpu_frames`` and implements ``infer_frames``. A backend that
    can keep batches in flight implements ``submit``/``collect`` and sets ``in_flight``.
    """

    suffixes: ClassVar[tuple[str, ...]] = ()  # the files it runs; u2edge.backends.SUFFIXES is made from these
    name: ClassVar[str] = ""
    requires: ClassVar[str] = ""  # the top-level module it runs on
    preprocessing: Preprocessing
    batch_size: int | None
    max_batch: int | None = None  # the largest batch a dynamic model takes; None: any
    gpu_frames: bool = False
    in_flight: int = 1  # batches that submit() can have started before collect()
    input_name: str
    output_name: str

    @classmethod
    def installed(cls) -> bool:
        """Whether the module it runs on is installed (checked without importing it)."""
        return available(cls.requires)

    def bind(self, path: str | os.PathLike, inputs: Sequence[Tensor], outputs: Sequence[Tensor],
             metadata: Mapping[str, str]) -> None:
        """Check a U-2-Net graph (one (N, 3, S, S) input; the output named ``mask``, else the first,
        ending in (S, S)) and read its preprocessing from ``metadata`` (``Preprocessing.to_metadata``'s
        keys; a missing key takes the official value). One ModelFormatError line otherwise."""
        name = Path(path).name
        shape = tuple(inputs[0][1]) if len(inputs) == 1 else ()
        if len(shape) != 4 or shape[1] != 3 or shape[2] is None or shape[2] != shape[3] or shape[2] < 1:
            raise ModelFormatError(f"{name} is not a U-2-Net graph: inputs {[(n, list(s)) for n, s in inputs]}; "
                                   "expected one (N, 3, S, S) image input")
        size = shape[2]
        output = next((t for t in outputs if t[0] == "mask"), outputs[0] if outputs else None)
        if output is None or tuple(output[1][-2:]) not in ((size, size), (None, None)):
            raise ModelFormatError(f"{name} is not a U-2-Net graph: outputs {[(n, list(s)) for n, s in outputs]}; "
                                   f"expected 'mask' (N, 1, {size}, {size})")
        self.preprocessing = Preprocessing.from_metadata(metadata, imgsz=size)
        if self.preprocessing.imgsz != size:
            raise ModelFormatError(f"{name}: its metadata says {self.preprocessing.imgsz}px but its input is {size}px; "
                                   f"re-export it: u2edge export --imgsz {size}")
        self.input_name, self.output_name = inputs[0][0], output[0]
        self.batch_size = shape[0]

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 -> (N, S, S) float32 fused sigmoid maps."""

    def infer_frames(self, frames: Sequence[np.ndarray], *, rgb: bool = False) -> list[np.ndarray]:
        """HxWx3 uint8 frames -> HxW float32 masks, pre- and post-processed on the GPU."""
        raise NotImplementedError(f"{self.name} pre- and post-processes on the CPU")

    def submit(self, batch: np.ndarray) -> object:
        """Start ``infer(batch)``; returns a ticket for ``collect``. This default runs it now."""
        return self.infer(batch)

    def submit_frames(self, frames: Sequence[np.ndarray], *, rgb: bool = False) -> object:
        """Start ``infer_frames(frames)``; returns a ticket for ``collect``. This default runs it now."""
        return self.infer_frames(frames, rgb=rgb)

    def collect(self, ticket: object):
        """The result of a ``submit`` or ``submit_frames``, waiting for it where it still runs."""
        return ticket

    def describe(self) -> str:
        """One line naming the backend and where it runs."""
        return self.name

    def close(self) -> None:
        """Release what the backend holds; calling it twice is harmless."""
