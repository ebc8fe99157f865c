"""Test and benchmark clips made from real photos: a subject sliding over a background."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

__all__ = ["moving_subject_frames", "write_clip"]


def moving_subject_frames(subject: np.ndarray, background: np.ndarray, *, frames: int,
                          size: tuple[int, int]) -> list[np.ndarray]:
    """``subject`` (half the frame's size) sliding left to right over ``background``, one step a frame."""
    back = cv2.resize(background, size, interpolation=cv2.INTER_AREA)
    sub = cv2.resize(subject, (size[0] // 2, size[1] // 2), interpolation=cv2.INTER_AREA)
    out = []
    for i in range(frames):
        frame = back.copy()
        x, y = (size[0] - sub.shape[1]) * i // max(frames - 1, 1), size[1] // 4
        frame[y:y + sub.shape[0], x:x + sub.shape[1]] = sub
        out.append(frame)
    return out


def write_clip(path: Path, frames: list[np.ndarray], fps: float) -> Path:
    """An .mp4 (mp4v) or .avi (MJPG) of ``frames``."""
    fourcc = "MJPG" if path.suffix.lower() == ".avi" else "mp4v"
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path
