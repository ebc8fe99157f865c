"""Frame sources by URI, after jetson-utils' videoSource: cameras, CSI, RTSP, files, folders, globs.

    /dev/video0 or 0        V4L2 camera (--input-width/--input-height/--input-rate, optional MJPG)
    csi://0                 Jetson CSI camera through GStreamer's nvarguscamerasrc
    rtsp://host/stream      network stream, low-latency settings
    clip.mp4                video file
    shots/ or 'shots/*.jpg' image folder or glob, in sorted order
    "videotestsrc ! ... ! appsink"   a raw GStreamer pipeline

Live sources (cameras, CSI, RTSP, and GStreamer pipelines from a camera or the network) can fail and
be reopened; files, folders and other GStreamer pipelines (a file through a hardware decoder, a test
source) are read once, losslessly and in order, to their end of stream. ``open_source(...,
lossless=True)`` reads any pipeline that way. ``read()`` returns an HxWx3 uint8 BGR frame, None at the end, raises
``CorruptFrame`` for one frame (or image) that cannot be decoded, and for the rest of a video file
that ends before the frame count its header gives, and ``SourceError`` when the source stops.
After each read, ``tag`` says what the frame came from where a source knows (an image's path).
Images and video frames over the pixel limit (``u2edge.images.pixel_limit``) are refused.
"""

from __future__ import annotations

import abc
import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._deps import require
from ..errors import ImageError, SourceError
from ..images import IMAGE_SUFFIXES, MAX_PIXELS_ENV, expand_inputs, pixel_limit, read_image, to_bgr8

__all__ = ["Source", "CaptureSource", "ImageSequenceSource", "CorruptFrame", "CaptureOptions", "open_source",
           "VIDEO_SUFFIXES"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")
# containers whose header stores the number of frames (MP4/MOV's sample table, AVI's header): a file
# that ends before it is truncated; elsewhere OpenCV estimates the count from the duration
_COUNTED_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi")


class CorruptFrame(SourceError):
    """One frame could not be decoded; the stream goes on."""


@dataclass(frozen=True)
class CaptureOptions:
    width: int | None = None
    height: int | None = None
    rate: float | None = None
    fourcc: str | None = None  # e.g. "MJPG" for USB cameras that only reach full rate compressed


class Source(abc.ABC):
    uri: str
    live: bool  # live: keep only the newest frame, reopen on failure; else lossless and ordered
    fps: float | None = None
    count: int | None = None  # frames, when known in advance
    tag: object = None  # what the frame last read came from (an image file's path); the pipeline hands it to the sink

    @abc.abstractmethod
    def read(self) -> np.ndarray | None:
        """The next frame, or None at the end."""

    def reopen(self) -> None:
        """Start again after a failure (live sources)."""

    def close(self) -> None:
        """Release the device or file; calling it twice is harmless."""

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CaptureSource(Source):
    """Anything OpenCV's VideoCapture opens: V4L2 devices, GStreamer pipelines, RTSP, video files."""

    def __init__(self, uri: str, target, backend: int, *, live: bool, options: CaptureOptions = CaptureOptions(),
                 what: str = "source", max_pixels: int | None = None, params: tuple[int, ...] = ()) -> None:
        self.uri, self.live, self._what = uri, live, what
        self._target, self._backend, self._options, self._params = target, backend, options, list(params)
        self._max_pixels = pixel_limit(max_pixels)
        self._cap = None
        self._lost: SourceError | None = None  # why the last reopen failed: what reads say until one succeeds
        self._frames, self._ended = 0, False
        self._open()

    def _open(self) -> None:
        cv2 = require("cv2")
        cap = cv2.VideoCapture(self._target, self._backend, self._params) if self._params else \
            cv2.VideoCapture(self._target, self._backend)
        opts = self._options
        if opts.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*opts.fourcc))
        if opts.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, opts.width)
        if opts.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, opts.height)
        if opts.rate:
            cap.set(cv2.CAP_PROP_FPS, opts.rate)
        if self.live:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the driver's queue holds no stale frames
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self._what} {self.uri} (busy, unreachable, or not a video source)")
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > self._max_pixels:
            cap.release()
            limit = self._max_pixels
            raise SourceError(lambda spell: f"{self._what} {self.uri}: its {width}x{height} frames are "
                                            f"{width * height:,} pixels, over the limit of {limit:,}; raise it with "
                                            f"{spell('max_pixels')} or the environment variable {MAX_PIXELS_ENV}")
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else None
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.count = count if not self.live and count > 0 else None

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            raise self._lost or SourceError(f"{self._what} {self.uri} is closed")
        if self._ended:
            return None
        ok, frame = self._cap.read()
        if not ok or frame is None:
            if self.live:
                raise SourceError(f"{self._what} {self.uri} stopped delivering frames (unplugged or lost)")
            self._ended = True
            if self.count and self._frames < self.count and self._what == "video" \
                    and Path(self.uri).suffix.lower() in _COUNTED_SUFFIXES:
                raise CorruptFrame(f"{self.uri}: frames {self._frames + 1} to {self.count} of {self.count} cannot be "
                                   "decoded (the file is truncated or corrupt); the frames before them were read")
            return None
        self._frames += 1
        try:
            return to_bgr8(frame)
        except ImageError as exc:
            raise CorruptFrame(f"{self.uri}: frame {self._frames}: {exc}") from exc

    def reopen(self) -> None:
        self.close()
        self._frames, self._ended = 0, False
        try:
            self._open()
        except SourceError as exc:
            self._lost = exc
            raise
        self._lost = None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageSequenceSource(Source):
    """Image files in the order given (a folder's or a glob's are sorted), each read once; ``tag``
    is the path of the image last read. An unreadable one, or one over ``max_pixels``, is a
    ``CorruptFrame`` that names it, and the next read goes on with the next image."""

    live = False

    def __init__(self, uri: str, paths: list[Path], fps: float | None = None, *,
                 max_pixels: int | None = None) -> None:
        if not paths:
            raise SourceError(f"{uri} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.uri, self.paths, self.fps, self.count = uri, paths, fps, len(paths)
        self.max_pixels = pixel_limit(max_pixels)  # a bad U2EDGE_MAX_PIXELS fails here, not image by image
        self._next = 0

    def read(self) -> np.ndarray | None:
        if self._next >= len(self.paths):
            return None
        path = self.paths[self._next]
        self._next += 1
        self.tag = path
        try:
            return read_image(path, max_pixels=self.max_pixels)
        except ImageError as exc:  # read_image names the file; the message keeps its parameter names
            raise CorruptFrame(exc.message) from exc


def _video_devices() -> list[str]:
    return sorted(glob.glob("/dev/video*"), key=lambda d: int(re.sub(r"\D", "", d) or 0))


def _camera(uri: str, index: int, options: CaptureOptions) -> CaptureSource:
    cv2 = require("cv2")
    device = f"/dev/video{index}"
    if os.name == "posix" and not os.path.exists(device):
        found = _video_devices()
        raise SourceError(f"camera {uri} not found; video devices here: "
                          f"{', '.join(found) if found else 'none (no camera connected, or not visible here)'}")
    backend = cv2.CAP_V4L2 if os.name == "posix" else cv2.CAP_ANY
    return CaptureSource(uri, index, backend, live=True, options=options, what="camera")


# GStreamer source elements that capture from a device or the network: a pipeline that starts with one is
# live (newest frame first; when it stops it was lost, and is reopened); any other pipeline ends at its end
# of stream, like a file
_LIVE_ELEMENTS = frozenset((
    "v4l2src", "nvarguscamerasrc", "nvv4l2camerasrc", "libcamerasrc", "pipewiresrc", "ximagesrc", "avfvideosrc",
    "ksvideosrc", "mfvideosrc", "dshowvideosrc", "uvch264src", "aravissrc", "pylonsrc", "rtspsrc", "rtspclientsink",
    "udpsrc", "tcpclientsrc", "tcpserversrc", "srtsrc", "srtclientsrc", "souphttpsrc", "rtmpsrc", "rtmp2src",
    "webrtcsrc", "shmsrc", "nvv4l2src"))


def live_pipeline(pipeline: str) -> bool:
    """Whether a GStreamer pipeline captures live: its first element is a camera or network source, it
    says ``is-live=true``, or its ``uri=`` is not a file."""
    first = pipeline.strip().split("!", 1)[0].split()
    if first and first[0] in _LIVE_ELEMENTS:
        return True
    if re.search(r"\bis-live\s*=\s*(true|1)\b", pipeline, re.IGNORECASE):
        return True
    uri = re.search(r"\buri\s*=\s*\"?([a-z0-9+.-]+)://", pipeline, re.IGNORECASE)
    return bool(uri) and uri.group(1).lower() != "file"


def _gstreamer(uri: str, pipeline: str, why: str, *, live: bool) -> CaptureSource:
    cv2 = require("cv2")
    from ..info import opencv_features

    if not opencv_features().get("gstreamer"):
        raise SourceError(f"{uri} {why}, and this OpenCV ({cv2.__version__}) has no GStreamer; use the system's "
                          "python3-opencv (JetPack's, or Debian's: see the README, \"GStreamer\"); pip's "
                          "opencv-python lacks GStreamer")
    return CaptureSource(uri, pipeline, cv2.CAP_GSTREAMER, live=live, what="GStreamer source")


def csi_pipeline(sensor: int, options: CaptureOptions) -> str:
    width, height, rate = options.width or 1280, options.height or 720, int(options.rate or 30)
    return (f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM),width={width},height={height},"
            f"framerate={rate}/1 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
            "appsink drop=true max-buffers=1 sync=false")


RTSP_TIMEOUT_MS = 5000  # a server that stops answering (no FIN: a pulled cable) is lost after this, not 30 s


def _rtsp(uri: str) -> CaptureSource:
    cv2 = require("cv2")
    # read by OpenCV's FFmpeg backend when it opens the stream: TCP, no input buffering, low delay
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay")
    return CaptureSource(uri, uri, cv2.CAP_FFMPEG, live=True, what="stream",
                         params=(cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, RTSP_TIMEOUT_MS,
                                 cv2.CAP_PROP_READ_TIMEOUT_MSEC, RTSP_TIMEOUT_MS))


def open_source(uri: str | int | os.PathLike, options: CaptureOptions = CaptureOptions(), *,
                max_pixels: int | None = None, lossless: bool = False) -> Source:
    """The source a URI names (see the module docstring); a clear ``SourceError`` otherwise. Images
    and the frames of video files over ``max_pixels`` (see ``u2edge.images.pixel_limit``) are refused.
    ``lossless`` reads a GStreamer pipeline frame by frame to its end even if it is live."""
    text = os.fspath(uri) if not isinstance(uri, int) else str(uri)
    if re.fullmatch(r"\d+", text):
        return _camera(text, int(text), options)
    match = re.fullmatch(r"(?:v4l2://)?/dev/video(\d+)", text)
    if match:
        return _camera(text, int(match.group(1)), options)
    match = re.fullmatch(r"csi://(\d+)", text)
    if match:
        return _gstreamer(text, csi_pipeline(int(match.group(1)), options), "needs GStreamer's nvarguscamerasrc",
                          live=True)
    if re.match(r"rtsps?://", text):
        return _rtsp(text)
    if " ! " in text:
        return _gstreamer(text, text, "is a GStreamer pipeline", live=not lossless and live_pipeline(text))
    path = Path(text)
    if path.is_dir() or (glob.has_magic(text) and not path.exists()):
        paths, problems = expand_inputs([text])
        if problems and not paths:
            raise SourceError(problems[0])
        return ImageSequenceSource(text, [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES],
                                   fps=options.rate, max_pixels=max_pixels)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageSequenceSource(text, [path], fps=options.rate, max_pixels=max_pixels)
        cv2 = require("cv2")
        return CaptureSource(text, text, cv2.CAP_ANY, live=False, what="video", max_pixels=max_pixels)
    raise SourceError(f"no such file, folder or camera: {text} (sources: /dev/videoN, N, csi://N, rtsp://..., "
                      "a video file, an image folder or glob, or a GStreamer pipeline)")
