"""Frame sinks by URI: ``display://0`` (an OpenCV window), a video file, a folder of PNGs, ``null``,
a GStreamer pipeline that starts with ``appsrc``; and ``PerFileSink``, which writes each frame to the
output planned for the image file it came from.

Files are complete or absent: a video is written to a hidden temporary file beside its target,
checked when it is closed (its frame count read back from the container), and only then renamed
into place; PNG frames and per-file outputs are each written atomically. ``close()`` finalizes what was written so
far (a stopped stream keeps its frames); ``abort()`` removes it. A GStreamer pipeline writes where it
says, so it alone gets no temporary file.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import math
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

from .._deps import require
from .._files import output_folder, partial_file, write_failure
from ..errors import OutputError, SourceError
from ..images import write_image
from ..render import flatten
from .sources import VIDEO_SUFFIXES

__all__ = ["Sink", "NullSink", "FolderSink", "VideoFileSink", "GStreamerSink", "DisplaySink", "PerFileSink",
           "open_sink", "StopStream", "CODECS", "DEFAULT_CRF"]

log = logging.getLogger("u2edge")

CODECS = ("auto", "h264", "mp4v", "mjpg")
"""Video file codecs: auto (H.264 where PyAV can write it, else mp4v; MJPG in .avi), or one by name."""
DEFAULT_CRF = 23  # x264's own default
H264_INSTALL = "pip install 'u2edge[h264]'"
_H264_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}  # suffix -> FFmpeg muxer
# OpenCV's codecs and the containers that hold each (OpenCV puts MJPG into .mp4 under an mp4v tag: a broken file)
_OPENCV_CODECS = {"mp4v": (".mp4", ".m4v", ".mov", ".mkv", ".avi"), "mjpg": (".avi", ".mov", ".mkv")}
_FOURCC = {"mp4v": "mp4v", "mjpg": "MJPG"}
_WRITABLE = (".mp4", ".m4v", ".mov", ".mkv", ".avi")


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
    """A video file at ``fps`` (default 30; fractional rates such as 29.97 are kept); the size is the
    first frame's, and later frames of another size are resized to it.

    ``codec``: ``auto`` (default) writes H.264 into .mp4, .m4v, .mov and .mkv when PyAV is installed
    (``pip install 'u2edge[h264]'``), else mp4v there; MJPG into .avi. ``h264`` (libx264 through
    PyAV, preset veryfast, ``crf`` 0 to 51, default 23, yuv420p so browsers play it) is refused for
    .avi, whose index cannot hold its reordered frames. ``mp4v`` and ``mjpg`` are OpenCV's own.
    yuv420p needs an even width and height: an odd-sized frame is padded by one replicated pixel
    row or column, so such a video is one pixel larger than its frames.
    """

    def __init__(self, path: Path, fps: float | None, codec: str = "auto", crf: int | None = None) -> None:
        self.uri, self.path, self.fps = str(path), path, _frame_rate(fps)
        suffix = path.suffix.lower()
        if suffix not in _WRITABLE:
            raise OutputError(f"cannot write {suffix} videos; name the output .mp4 or .avi")
        self.codec = _video_codec(path, codec, crf)
        self.crf = DEFAULT_CRF if crf is None else crf
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = partial_file(path, suffix)  # OpenCV picks the container by the last suffix
        except OSError as exc:
            raise OutputError(f"cannot write the video {path}: {exc.strerror}") from exc
        os.close(fd)
        self._tmp: Path | None = Path(tmp)
        self._encoder: _OpenCVEncoder | _H264Encoder | None = None
        self._size: tuple[int, int] | None = None

    def write(self, image: np.ndarray, hud: str = "", tag: object = None) -> None:
        cv2 = require("cv2")
        image = flatten(image)  # a video holds no alpha: cutouts go over a checkerboard
        try:
            if self._encoder is None:
                self._size = (image.shape[1], image.shape[0])
                self._encoder = self._open_encoder()
            elif (image.shape[1], image.shape[0]) != self._size:  # sources may change size
                image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
            self._encoder.write(image)
        except _EncodeError as exc:
            self.abort()
            raise OutputError(f"could not write the video {self.path}: {exc}; nothing was left behind") from exc
        self.written += 1

    def _open_encoder(self) -> _OpenCVEncoder | _H264Encoder:
        if self.codec == "h264":
            return _H264Encoder(self._tmp, _H264_FORMATS[self.path.suffix.lower()], self.fps, self._size, self.crf)
        encoder = _OpenCVEncoder(self._tmp, _FOURCC[self.codec], self.fps, self._size)
        if not encoder.opened:
            encoder.abort()
            raise _EncodeError(f"OpenCV cannot encode {self.codec} into {self.path.suffix} here")
        return encoder

    def close(self) -> None:
        if self._encoder is None:
            if self._tmp is not None:  # nothing written: no file
                self._tmp.unlink(missing_ok=True)
                self._tmp = None
            return
        encoder, self._encoder = self._encoder, None
        try:
            encoder.close()
        except _EncodeError as exc:
            self.abort()
            raise OutputError(f"could not write the video {self.path}: {exc}; nothing was left behind") from exc
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
        if self._encoder is not None:
            self._encoder.abort()
            self._encoder = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None


def _frame_rate(fps: float | None) -> float:
    """``fps``, or 30 where a source gives none (OpenCV reports 0 or NaN for some streams)."""
    return float(fps) if fps is not None and math.isfinite(fps) and fps > 0 else 30.0


def _video_codec(path: Path, codec: str, crf: int | None) -> str:
    """The codec that ``codec`` (one of CODECS) gives ``path``: h264, mp4v or mjpg; one line if it
    cannot go there, or if ``crf`` is given for another codec than H.264."""
    suffix = path.suffix.lower()
    _check_codec(codec)
    if crf is not None and not (isinstance(crf, (int, float)) and 0 <= crf <= 51):
        raise OutputError(lambda spell: f"{spell('crf')} {crf} is out of range; give 0 (lossless) to 51 (smallest), "
                                        f"{DEFAULT_CRF} by default")
    if codec == "auto":
        if suffix not in _H264_FORMATS:
            codec = "mjpg"
        else:
            missing = _h264_missing()
            if missing is None:
                codec = "h264"
            elif crf is not None:
                raise OutputError(lambda spell: f"{spell('crf')} {crf} is for H.264, and {missing}, so {path.name} "
                                                f"would be mp4v; install it with: {H264_INSTALL}")
            else:
                log.info("writing %s as mp4v, which browsers do not play: %s; for H.264: %s", path.name, missing,
                         H264_INSTALL)
                codec = "mp4v"
    if codec == "h264":
        if suffix not in _H264_FORMATS:
            raise OutputError(lambda spell: f"{spell('codec')} h264 goes into .mp4, .m4v, .mov or .mkv, not {suffix}; "
                                            f"rename the output, or choose {spell('codec')} mjpg or mp4v for {suffix}")
        missing = _h264_missing()
        if missing is not None:
            raise OutputError(lambda spell: f"{spell('codec')} h264 needs PyAV with libx264, and {missing}; install "
                                            f"it with: {H264_INSTALL} (its FFmpeg bundles libx264, GPL)")
        return codec
    if crf is not None:
        raise OutputError(lambda spell: f"{spell('crf')} {crf} is for H.264, and {path.name} is {codec}; drop it, or "
                                        f"choose {spell('codec')} h264")
    if suffix not in _OPENCV_CODECS[codec]:
        raise OutputError(lambda spell: f"{spell('codec')} {codec} cannot go into {suffix}; it goes into "
                                        f"{', '.join(_OPENCV_CODECS[codec])}")
    return codec


def _check_codec(codec: str) -> None:
    if codec not in CODECS:
        raise OutputError(lambda spell: f"{spell('codec')} {codec!r} is not one of {', '.join(CODECS)}")


def _h264_missing() -> str | None:
    """Why PyAV cannot write H.264 here, or None when it can."""
    try:
        import av
    except ImportError:
        return "PyAV is not installed"
    if "libx264" not in av.codecs_available:
        return f"this PyAV ({av.__version__}) has no libx264 encoder"
    return None


class _EncodeError(Exception):
    """An encoder failed; the message says why, in the words a user acts on."""


class _OpenCVEncoder:
    """OpenCV's VideoWriter (mp4v, MJPG); it reports no write errors, so the read-back catches them."""

    def __init__(self, path: Path, fourcc: str, fps: float, size: tuple[int, int]) -> None:
        cv2 = require("cv2")
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        self.opened = self._writer.isOpened()

    def write(self, image: np.ndarray) -> None:
        self._writer.write(image)

    def close(self) -> None:
        self._writer.release()

    abort = close


class _H264Encoder:
    """libx264 through PyAV: yuv420p, BT.601 limited range (what OpenCV converts to and decodes
    from), tagged so that players agree; ``fps`` as a fraction, so 29.97 stays 30000/1001."""

    def __init__(self, path: Path, container: str, fps: float, size: tuple[int, int], crf: float) -> None:
        import av

        self._av = av
        self._cv2 = require("cv2")
        self._pad = (size[1] % 2, size[0] % 2)  # yuv420p: even sizes only
        rate = Fraction(float(fps)).limit_denominator(1001)
        with self._errors():
            self._container = av.open(str(path), mode="w", format=container)
        try:
            with self._errors():
                self._stream = self._container.add_stream("libx264", rate=rate)
                self._stream.width, self._stream.height = size[0] + self._pad[1], size[1] + self._pad[0]
                self._stream.pix_fmt = "yuv420p"
                self._stream.codec_context.time_base = 1 / rate
                self._stream.options = {
                    "preset": "veryfast", "crf": str(crf),
                    "x264-params": "colorprim=smpte170m:transfer=smpte170m:colormatrix=smpte170m:range=tv"}
        except BaseException:
            self.abort()
            raise
        self._frames = 0

    @contextlib.contextmanager
    def _errors(self):
        try:
            yield
        except (self._av.FFmpegError, OSError) as exc:
            why = write_failure(exc) if isinstance(exc, OSError) else (getattr(exc, "strerror", None) or str(exc))
            raise _EncodeError(why) from exc

    def write(self, image: np.ndarray) -> None:
        if any(self._pad):  # one replicated pixel rather than a refusal
            image = self._cv2.copyMakeBorder(image, 0, self._pad[0], 0, self._pad[1], self._cv2.BORDER_REPLICATE)
        yuv = self._cv2.cvtColor(image, self._cv2.COLOR_BGR2YUV_I420)
        frame = self._av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = self._frames
        with self._errors():
            self._container.mux(self._stream.encode(frame))
        self._frames += 1

    def close(self) -> None:
        """Flush the encoder and write the container's index."""
        try:
            with self._errors():
                self._container.mux(self._stream.encode(None))
                self._container.close()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        with contextlib.suppress(self._av.FFmpegError, OSError):  # the file is removed anyway
            self._container.close()


class GStreamerSink(Sink):
    """Frames into a GStreamer pipeline that starts with ``appsrc``, through OpenCV's GStreamer
    backend, at ``fps`` (default 30); the size is the first frame's:

        appsrc ! videoconvert ! x264enc ! mp4mux ! filesink location=out.mp4

    ``close()`` sends end of stream, so muxers finish their files. The pipeline writes where it says:
    no temporary file, read-back or atomic rename is possible, and ``abort()`` cannot remove what it
    wrote. Needs an OpenCV built with GStreamer (Debian's or JetPack's python3-opencv; pip's has none).
    """

    def __init__(self, pipeline: str, fps: float | None) -> None:
        from ..info import opencv_features

        self.uri, self.fps = pipeline, _frame_rate(fps)
        if not opencv_features().get("gstreamer"):
            raise OutputError(f"{pipeline}: this OpenCV ({require('cv2').__version__}) has no GStreamer, so it cannot "
                              "write to a pipeline; use one built with it (Debian's or JetPack's python3-opencv, see "
                              "the README, \"GStreamer\"); pip's opencv-python has none")
        self._writer = None
        self._size: tuple[int, int] | None = None

    def write(self, image: np.ndarray, hud: str = "", tag: object = None) -> None:
        cv2 = require("cv2")
        image = flatten(image)
        if self._writer is None:
            self._size = (image.shape[1], image.shape[0])
            writer = cv2.VideoWriter(self.uri, cv2.CAP_GSTREAMER, 0, self.fps, self._size, True)
            if not writer.isOpened():
                raise OutputError(f"{self.uri}: GStreamer cannot start this pipeline; check that each element "
                                  "exists (gst-inspect-1.0) and that it starts with appsrc")
            self._writer = writer
        elif (image.shape[1], image.shape[0]) != self._size:  # sources may change size
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()  # end of stream: the muxer writes its index
            self._writer = None


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


def open_sink(uri: str | None, *, fps: float | None = None, headless: bool = False, codec: str = "auto",
              crf: int | None = None) -> Sink:
    """``display://N`` (the default; null with ``headless``), ``null``, a video file (``codec`` and
    ``crf`` as ``VideoFileSink`` takes them), a GStreamer pipeline starting with ``appsrc``, or a folder."""
    text = uri or "display://0"
    if text.startswith("display://"):
        _video_file_options_only(codec, crf, "a window")
        return NullSink() if headless else DisplaySink(text)
    if text in ("null", "null://"):
        _video_file_options_only(codec, crf, "null")
        return NullSink()
    if " ! " in text:
        if not text.lstrip().startswith("appsrc"):
            raise OutputError(f"{text}: a GStreamer sink pipeline starts with appsrc, such as "
                              "'appsrc ! videoconvert ! x264enc ! mp4mux ! filesink location=out.mp4'")
        _video_file_options_only(codec, crf, "a GStreamer pipeline, whose elements choose the codec")
        return GStreamerSink(text, fps)
    path = Path(text)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return VideoFileSink(path, fps, codec, crf)
    _video_file_options_only(codec, crf, "a folder of PNG frames")
    return FolderSink(path)


def _video_file_options_only(codec: str, crf: int | None, sink: str) -> None:
    """Refuse a codec or crf for a sink that is not a video file (``sink`` says what it is)."""
    _check_codec(codec)
    if codec != "auto":
        raise OutputError(lambda spell: f"{spell('codec')} {codec} is for video files, and this sink is {sink}")
    if crf is not None:
        raise OutputError(lambda spell: f"{spell('crf')} {crf} is for H.264 video files, and this sink is {sink}")
