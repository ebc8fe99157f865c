"""Frame sinks by URI: ``display://0`` (an OpenCV window), a video file, a folder of PNGs, ``null``;
and ``PerFileSink``, which writes each frame to the output planned for the image file it came from.

Files are complete or absent: a video is written to a hidden temporary file beside its target,
checked when it is closed (its frame count read back from the container), and only then renamed
into place; PNG frames and per-file outputs are each written atomically. ``close()`` finalizes what was written so
far (a stopped stream keeps its frames); ``abort()`` removes it.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .._deps import require
from .._files import output_folder, partial_file
from ..errors import OutputError, SourceError
from ..images import write_image
from ..render import flatten
from .sources import VIDEO_SUFFIXES

__all__ = ["Sink", "NullSink", "FolderSink", "VideoFileSink", "DisplaySink", "PerFileSink", "open_sink",
           "StopStream"]

_FOURCC = {".avi": "MJPG", ".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v"}


class StopStream(Exception):
    """The user closed the window (q or Esc)."""


class Sink(abc.ABC):
    uri: str
    written = 0

    @abc.abstractmethod
    def write(self, image: np.ndarray, hud: str = "", tag: object = None) -> None:
        """Write one rendered frame; ``hud`` is a status line for sinks that show it, ``tag`` what
        the frame came from where its source says (an image file's path; the pipeline passes it
        only then)."""

    def close(self) -> None:
        """Finalize what was written; calling it twice is harmless."""

    def abort(self) -> None:
        """Remove what was written (an error made it worthless)."""
        self.close()


class NullSink(Sink):
    uri = "null"

    def write(self, image: np.ndarray, hud: str = "", tag: object = None) -> None:
        self.written += 1


class FolderSink(Sink):
    """frame_000000.png, frame_000001.png, ... (cutouts keep their alpha)."""

    def __init__(self, folder: Path) -> None:
        self.uri, self.folder = str(folder), folder
        output_folder(folder, "the sink folder", "give a folder, a video file name, display://0 or null")
        if not os.access(folder, os.W_OK):
            raise OutputError(f"cannot write to the sink folder {folder}: permission denied")

    def write(self, image: np.ndarray, hud: str = "", tag: object = None) -> None:
        write_image(self.folder / f"frame_{self.written:06d}.png", image)
        self.written += 1


class VideoFileSink(Sink):
    """mp4 (mp4v) or avi (MJPG) at the source's frame rate; the size is the first frame's."""

    def __init__(self, path: Path, fps: float | None) -> None:
        self.uri, self.path, self.fps = str(path), path, fps or 30.0
        suffix = path.suffix.lower()
        if suffix not in _FOURCC:
            raise OutputError(f"cannot write {suffix} videos; name the output .mp4 or .avi")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = partial_file(path, suffix)  # OpenCV picks the container by the last suffix
        except OSError as exc:
            raise OutputError(f"cannot write the video {path}: {exc.strerror}") from exc
        os.close(fd)
        self._tmp = Path(tmp)
        self._writer = None
        self._size: tuple[int, int] | None = None

    def write(self, image: np.ndarray, hud: str = "", tag: object = None) -> None:
        cv2 = require("cv2")
        image = flatten(image)  # a video holds no alpha: cutouts go over a checkerboard
        if self._writer is None:
            self._size = (image.shape[1], image.shape[0])
            self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*_FOURCC[self.path.suffix.lower()]),
                                           self.fps, self._size)
            if not self._writer.isOpened():
                self.abort()
                raise OutputError(f"OpenCV cannot encode {self.path.suffix} video here; try .avi (MJPG)")
        elif (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)  # sources may change size
        self._writer.write(image)
        self.written += 1

    def close(self) -> None:
        if self._writer is None:
            if self._tmp is not None:  # nothing written: no file
                self._tmp.unlink(missing_ok=True)
                self._tmp = None
            return
        self._writer.release()
        self._writer = None
        self._finalize()

    def _finalize(self) -> None:
        cv2 = require("cv2")
        tmp, self._tmp = self._tmp, None
        cap = cv2.VideoCapture(str(tmp))
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        cap.release()
        if frames != self.written:
            free = _free_bytes(tmp.parent)
            tmp.unlink(missing_ok=True)
            why = "the disk is full" if free is not None and free < 16 << 20 else "the encoder failed"
            raise OutputError(f"could not write the video {self.path}: {why} (it holds {frames} of {self.written} "
                              "frames); nothing was left behind")
        try:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"could not write the video {self.path}: {exc.strerror}") from exc

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None


class PerFileSink(Sink):
    """Each frame to the output planned for its source file (the frame's tag), written atomically:
    complete or absent. ``outputs`` pairs (input, output); an output that is one of the inputs is
    refused before anything is written. ``files`` lists (input, output, (height, width)) as written;
    each file stands on its own, so ``abort()`` keeps those already written."""

    def __init__(self, outputs: Iterable[tuple[Path, Path]]) -> None:
        self.outputs = {Path(src): Path(out) for src, out in outputs}
        inputs = {src.resolve() for src in self.outputs}
        for src, out in self.outputs.items():
            if out.resolve() in inputs:
                raise OutputError(f"{src}: its output {out} is an input; refusing to overwrite it")
        folders = {str(out.parent) for out in self.outputs.values()}
        self.uri = folders.pop() if len(folders) == 1 else f"{len(self.outputs)} planned files"
        self.files: list[tuple[Path, Path, tuple[int, int]]] = []

    def write(self, image: np.ndarray, hud: str = "", tag: object = None) -> None:
        out = self.outputs.get(tag) if tag is not None else None
        if out is None:
            raise ValueError(f"PerFileSink has no output planned for a frame tagged {tag!r}; its source must "
                             "tag each frame with one of the planned inputs (as ImageSequenceSource does)")
        write_image(out, image)
        self.files.append((tag, out, image.shape[:2]))
        self.written += 1


def _free_bytes(folder: Path) -> int | None:
    try:
        stat = os.statvfs(folder)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


class DisplaySink(Sink):
    """An OpenCV window with a heads-up line (FPS, latency); q or Esc stops the stream."""

    def __init__(self, uri: str) -> None:
        from ..info import opencv_features

        self.uri, self.title = uri, f"u2edge {uri}"
        if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise SourceError(f"{uri}: no display here (DISPLAY is not set); use --headless, or a video file, "
                              "a folder or null as the sink")
        if (opencv_features().get("gui") or "NONE").upper() == "NONE":
            raise SourceError(f"{uri}: this OpenCV has no GUI (opencv-python-headless?); use --headless, or a "
                              "video file, a folder or null as the sink")
        self._open = False

    def write(self, image: np.ndarray, hud: str = "", tag: object = None) -> None:
        cv2 = require("cv2")
        image = flatten(image)
        if hud:
            image = image.copy()
            cv2.putText(image, hud, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 4, cv2.LINE_AA)
            cv2.putText(image, hud, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.imshow(self.title, image)
        self._open = True
        self.written += 1
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            raise StopStream()

    def close(self) -> None:
        if self._open:
            require("cv2").destroyWindow(self.title)
            self._open = False


def open_sink(uri: str | None, *, fps: float | None = None, headless: bool = False) -> Sink:
    """``display://N`` (the default; null with ``headless``), ``null``, a video file, or a folder."""
    text = uri or "display://0"
    if text.startswith("display://"):
        return NullSink() if headless else DisplaySink(text)
    if text in ("null", "null://"):
        return NullSink()
    path = Path(text)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return VideoFileSink(path, fps)
    return FolderSink(path)
