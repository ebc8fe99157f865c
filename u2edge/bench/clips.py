"""Test and benchmark clips made from real photos: a subject sliding over a background."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

__all__ = ["moving_subject_frames", "subject_regions", "add_noise", "write_clip"]


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


def subject_regions(*, frames: int, size: tuple[int, int]) -> list[np.ndarray]:
    """Where ``moving_subject_frames`` pastes its subject: one HxW bool array a frame."""
    white, black = np.full((2, 2), 255, np.uint8), np.zeros((2, 2), np.uint8)
    return [f > 127 for f in moving_subject_frames(white, black, frames=frames, size=size)]


def add_noise(frames: list[np.ndarray], *, sigma: float, seed: int) -> list[np.ndarray]:
    """``frames`` with a camera's sensor noise: seeded Gaussian noise of ``sigma`` gray levels, new for each frame."""
    rng = np.random.default_rng(seed)
    return [np.clip(f + rng.normal(0.0, sigma, f.shape), 0, 255).astype(np.uint8) for f in frames]


def write_clip(path: Path, frames: list[np.ndarray], fps: float) -> Path:
    """An .mp4 (mp4v) or .avi (MJPG) of ``frames``."""
    fourcc = "MJPG" if path.suffix.lower() == ".avi" else "mp4v"
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path
