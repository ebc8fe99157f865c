"""Label-free targets: a teacher model's masks of the user's own images, computed once into the
run folder, where the student trains on them as it would on hand-made masks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ImageError
from ..images import read_image, write_image
from ..weights import WEIGHTS, default_onnx
from .data import Pair

__all__ = ["open_teacher", "teacher_pairs"]


def open_teacher(teacher: str, device: str):
    """The engine of ``teacher``: an official model by name, run in FP32 (PyTorch on a CUDA
    device, else the CPU runtime), or any model file ``U2EdgeEngine`` opens."""
    from ..engine import U2EdgeEngine

    if teacher not in WEIGHTS:
        return U2EdgeEngine(teacher)
    if device.startswith("cuda"):
        return U2EdgeEngine(default_onnx(teacher), backend="torch", device=device, half=False)
    return U2EdgeEngine(model=teacher, precision="fp32")


def teacher_pairs(images: Sequence[Path], engine, folder: Path, *, max_pixels: int | None = None,
                  step=lambda path: None) -> tuple[list[Pair], list[str]]:
    """(image, teacher mask) pairs, the masks written once as ``folder/IMAGE_NAME.png`` (8-bit)
    and reused when there; one problem line for each image that cannot be read."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs, problems = [], []
    for image in images:
        step(image)
        target = folder / f"{image.name}.png"
        if not target.exists():  # written atomically: one that exists is complete
            try:
                frame = read_image(image, max_pixels=max_pixels)
            except ImageError as exc:
                problems.append(str(exc))
                continue
            write_image(target, np.round(engine(frame) * 255).astype(np.uint8))
        pairs.append(Pair(image, target))
    return pairs, problems
