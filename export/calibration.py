"""The calibration folder of a build: which images calibrate and which are held out to measure
accuracy, and a hash of them all for the engine identity."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from ..errors import ImageError, U2EdgeError
from ..images import IMAGE_SUFFIXES, read_image
from ..weights import sha256_file

__all__ = ["split_calibration", "calibration_hash"]

log = logging.getLogger("u2edge")


def split_calibration(folder: Path, count: int) -> tuple[list[Path], list[Path]]:
    """(calibration images, held-out images) from ``folder``, the ``calib_dir`` of a build: every
    4th image is held out, and at most ``count`` of the others calibrate.

    Unreadable files are skipped with a warning; the held-out ones never calibrate.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise U2EdgeError(lambda spell: f"{spell('calib_dir')} {folder} is not a folder; give a folder of real images "
                                        "from your scenes")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise U2EdgeError(lambda spell: f"{spell('calib_dir')} {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    readable = []
    for path in files:
        try:
            read_image(path)
        except ImageError as exc:
            log.warning("skipping calibration image: %s", exc)
            continue
        readable.append(path)
    if len(readable) < 2:
        raise U2EdgeError(lambda spell: f"{spell('calib_dir')} {folder} has {len(readable)} readable image(s) of "
                                        f"{len(files)}; at least 2 are needed (some calibrate, the others check "
                                        "accuracy), 20 or more is better")
    held_out = readable[::4]
    calibration = [p for p in readable if p not in held_out][:count]
    return calibration, held_out


def calibration_hash(paths: list[Path]) -> str:
    """The sha256 of the images' names and contents, in order."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()
