"""Reading, converting and atomically writing images."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from ._files import write_bytes_atomic
from .errors import ImageError, OutputError

__all__ = ["IMAGE_SUFFIXES", "expand_inputs", "read_image", "read_mask", "to_bgr8", "write_image"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jp2")


def expand_inputs(inputs: Iterable[str]) -> tuple[list[Path], list[str]]:
    """Files, folders (their images, sorted) and globs -> (image paths in order without repeats,
    one problem line per input that names nothing)."""
    found: list[Path] = []
    problems: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            found += images
            if not images:
                problems.append(f"{item}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        elif path.exists():
            found.append(path)
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            found += matches
            if not matches:
                problems.append(f"{item}: no files match")
        else:
            problems.append(f"{item}: no such file or folder")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values()), problems


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Gray, BGRA or 16-bit images -> HxWx3 uint8 BGR (returned as is when already so)."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"cannot convert a {image.dtype} image; expected uint8 or uint16 pixels")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ImageError(f"cannot convert an image of shape {image.shape}; expected HxW, HxWx3 or HxWx4")


def _decode(path: Path, flags: int) -> np.ndarray:
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from exc
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise ImageError(f"{path}: not a readable image (corrupt, empty, or an unsupported format)")
    return image


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file as HxWx3 uint8 BGR, turned as its EXIF orientation says; gray, alpha
    and 16-bit inputs are converted."""
    return to_bgr8(_decode(Path(path), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH))


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Decode a mask file as HxW uint8."""
    return _decode(Path(path), cv2.IMREAD_GRAYSCALE)


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Encode by the suffix and write atomically: the file is complete or absent."""
    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise OutputError(f"{path}: OpenCV cannot encode {path.suffix} images")
    write_bytes_atomic(path, encoded)  # the encoder's buffer itself: no copy of a large PNG
