"""The frame pipeline: capture, inference and render/write overlap in three threads.

    capture thread  --(live: newest frame only | files: bounded queue)-->  inference (caller's thread)
    inference       --(bounded queue)-->  render + write thread

A live source keeps only its newest frame: a frame not yet taken when the next one arrives is
dropped and counted, so latency stays bounded by one frame. Files and folders go through a
bounded queue, losslessly and in order. Every stage times itself; memory is bounded by the queues.
A failing source is retried with backoff (live ones reopened) a bounded number of times, then the
stream ends cleanly; a corrupt frame is skipped and counted. A frame carries its source's tag (an
image file's path) through to the sink, so that a sink can write each frame to its own file.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..errors import SourceError
from ..processing import postprocess
from .sinks import Sink, StopStream
from .sources import CorruptFrame, Source

__all__ = ["Pipeline", "Stats", "Frame"]

log = logging.getLogger("u2edge")

_END = object()


@dataclass
class Frame:
    image: np.ndarray  # HxWx3 uint8 BGR
    index: int  # position in the source, counting dropped and corrupt frames
    captured: float  # time.perf_counter() when it was read
    tag: object = None  # what it came from, when its source says (an image file's path): for the sink


@dataclass
class Stats:
    """What a run did and how long each stage took (seconds, summed over frames)."""

    captured: int = 0
    processed: int = 0
    written: int = 0
    dropped: int = 0  # stale live frames replaced by a newer one
    corrupt: int = 0
    retries: int = 0
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("capture", "preprocess", "infer", "postprocess", "render", "write"), 0.0))
    latencies: list[float] = field(default_factory=list)  # capture -> written, per frame
    started: float = field(default_factory=time.perf_counter)
    ended: float | None = None
    stop_reason: str = "running"
    error: str | None = None

    def add(self, stage: str, seconds: float) -> None:
        self.stage_seconds[stage] += seconds

    def summary(self) -> dict:
        wall = (self.ended or time.perf_counter()) - self.started
        lat = sorted(self.latencies)
        pick = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3, 1) if lat else None  # noqa: E731
        stages = {k: round(v / max(self.processed if k not in ("capture",) else self.captured, 1) * 1e3, 2)
                  for k, v in self.stage_seconds.items()}
        infer = self.stage_seconds["infer"]
        return {"frames": {"captured": self.captured, "processed": self.processed, "written": self.written,
                           "dropped": self.dropped, "corrupt": self.corrupt},
                "retries": self.retries, "seconds": round(wall, 3),
                "network_fps": round(self.processed / infer, 2) if infer else None,
                "end_to_end_fps": round(self.written / wall, 2) if wall > 0 else None,
                "stage_ms": stages, "latency_ms": {"p50": pick(0.5), "p95": pick(0.95), "max": pick(1.0)},
                "stop": self.stop_reason, "error": self.error}

    def hud(self) -> str:
        now = time.perf_counter() - self.started
        fps = self.written / now if now > 0 else 0.0
        recent = self.latencies[-30:]
        latency = f"{np.mean(recent) * 1e3:.0f} ms" if recent else "-"
        return f"{fps:.1f} FPS  latency {latency}  dropped {self.dropped}"


class _Newest:
    """A one-frame slot: ``put`` replaces an untaken frame (and counts it dropped). The end of the
    stream queues behind the last frame instead of replacing it."""

    def __init__(self, stats: Stats) -> None:
        self._cond = threading.Condition()
        self._item = None
        self._ended = False
        self._stats = stats

    def put(self, item) -> None:
        with self._cond:
            if item is _END:
                self._ended = True
            else:
                if self._item is not None:
                    self._stats.dropped += 1
                self._item = item
            self._cond.notify()

    def get(self, timeout: float | None = None):
        with self._cond:
            if not self._cond.wait_for(lambda: self._item is not None or self._ended, timeout):
                raise queue.Empty
            if self._item is None:
                return _END
            item, self._item = self._item, None
            return item


class Pipeline:
    """One source through an engine, optionally rendered into a sink.

        with U2EdgeEngine() as engine:
            stats = Pipeline(open_source("clip.mp4"), engine, open_sink("out.mp4"),
                             render=lambda frame, mask: render(frame, mask, "cutout")).run()

    ``render(frame, mask) -> image`` is the custom stage; iterate (``for frame, mask in pipeline``)
    to get the masks instead of a sink. ``retries`` failed reads are retried, ``backoff`` seconds
    apart and doubling, before the stream ends with ``stats.error`` set. A corrupt frame is skipped
    with a warning, or passed to ``on_corrupt(error)`` instead (called in the capture thread).
    """

    def __init__(self, source: Source, engine, sink: Sink | None = None, *,
                 render: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None, queue_size: int = 4,
                 retries: int = 5, backoff: float = 0.25, max_frames: int | None = None,
                 on_frame: Callable[[Stats], None] | None = None,
                 on_corrupt: Callable[[CorruptFrame], None] | None = None) -> None:
        self.source, self.engine, self.sink = source, engine, sink
        self.render = render
        self.retries, self.backoff, self.max_frames = retries, backoff, max_frames
        self.on_frame, self.on_corrupt = on_frame, on_corrupt
        self.stats = Stats()
        self._stop = threading.Event()
        self._inbox = _Newest(self.stats) if source.live else queue.Queue(maxsize=queue_size)
        self._outbox: queue.Queue = queue.Queue(maxsize=queue_size)
        self._errors: list[BaseException] = []

    # --- capture -------------------------------------------------------------------------------
    def _capture(self) -> None:
        stats, failures, index = self.stats, 0, 0
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and stats.captured >= self.max_frames:
                    stats.stop_reason = "max frames"
                    break
                t0 = time.perf_counter()
                try:
                    image = self.source.read()
                except CorruptFrame as exc:
                    stats.corrupt += 1
                    index += 1
                    if self.on_corrupt:
                        self.on_corrupt(exc)
                    else:
                        log.warning("skipping a corrupt frame: %s", exc)
                    continue
                except (SourceError, OSError) as exc:
                    if failures >= self.retries:
                        stats.error = f"{exc}; gave up after {self.retries} retries"
                        stats.stop_reason = "source failed"
                        break
                    failures += 1
                    stats.retries += 1
                    delay = self.backoff * 2 ** (failures - 1)
                    log.warning("%s; retry %d of %d in %.2f s", exc, failures, self.retries, delay)
                    if self._stop.wait(delay):
                        break
                    if self.source.live:
                        try:
                            self.source.reopen()
                        except SourceError as again:
                            log.warning("%s", again)
                    continue
                if image is None:
                    stats.stop_reason = "end of source"
                    break
                failures = 0
                stats.add("capture", time.perf_counter() - t0)
                stats.captured += 1
                self._put(self._inbox, Frame(image, index, time.perf_counter(), self.source.tag))
                index += 1
        except BaseException as exc:  # a bug in a source: end the stream and report it
            self._errors.append(exc)
        finally:
            self._put(self._inbox, _END)

    def _put(self, box, item) -> None:
        if isinstance(box, _Newest):
            box.put(item)
            return
        while True:  # a bounded queue: wait for room, unless the pipeline is stopping
            try:
                box.put(item, timeout=0.1)
                return
            except queue.Full:
                if self._stop.is_set() and item is not _END:
                    return

    # --- inference -----------------------------------------------------------------------------
    def _infer(self, frame: Frame) -> np.ndarray:
        stats = self.stats
        t0 = time.perf_counter()
        if self.engine.backend.gpu_frames:  # pre- and post-processing run on the GPU, inside "infer"
            mask = self.engine(frame.image)
            stats.add("infer", time.perf_counter() - t0)
            stats.processed += 1
            return mask
        x = self.engine.inputs([frame.image])
        t1 = time.perf_counter()
        with self.engine.lock:
            pred = self.engine.backend.infer(x)[0]
        t2 = time.perf_counter()
        mask = postprocess(pred, *frame.image.shape[:2])
        stats.add("preprocess", t1 - t0)
        stats.add("infer", t2 - t1)
        stats.add("postprocess", time.perf_counter() - t2)
        stats.processed += 1
        return mask

    def _frames(self) -> Iterator[Frame]:
        while True:
            try:
                item = self._inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _END:
                return
            yield item
            del item  # not held while waiting for the next frame

    # --- render and write ----------------------------------------------------------------------
    def _output(self) -> None:
        stats = self.stats
        try:
            while True:
                item = self._outbox.get()
                if item is _END:
                    return
                frame, mask = item
                t0 = time.perf_counter()
                image = self.render(frame.image, mask) if self.render else mask
                t1 = time.perf_counter()
                tag, captured = frame.tag, frame.captured
                del item, frame, mask  # a large frame and its mask are not held while the output is encoded
                if tag is None:
                    self.sink.write(image, stats.hud())
                else:
                    self.sink.write(image, stats.hud(), tag=tag)
                del image
                stats.add("render", t1 - t0)
                stats.add("write", time.perf_counter() - t1)
                stats.written += 1
                stats.latencies.append(time.perf_counter() - captured)
        except BaseException as exc:  # StopStream, a full disk: stop everything, report it in run()
            self._errors.append(exc)
            self._stop.set()
            while self._outbox.get() is not _END:  # let the inference thread finish its puts
                pass

    # --- driving -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(frame, mask) pairs; the capture thread runs ahead (newest frame only, if live)."""
        capture = threading.Thread(target=self._capture, name="u2edge-capture", daemon=True)
        capture.start()
        try:
            for frame in self._frames():
                yield frame.image, self._infer(frame)
                self.stats.written += 1
                self.stats.latencies.append(time.perf_counter() - frame.captured)
        finally:
            self._finish(capture)
        if self._errors:  # a bug in a source
            raise self._errors[0]

    def run(self) -> Stats:
        """Run to the end of the source (or max_frames, a failure, Ctrl-C); the sink is finalized.

        Ctrl-C and SIGTERM end the stream cleanly and are then re-raised; a sink error (a full
        disk) is raised after the pipeline has stopped.
        """
        if self.sink is None:
            raise ValueError("Pipeline.run() needs a sink; iterate over the pipeline to get masks instead")
        capture = threading.Thread(target=self._capture, name="u2edge-capture", daemon=True)
        output = threading.Thread(target=self._output, name="u2edge-output", daemon=True)
        capture.start()
        output.start()
        interrupted = None
        try:
            for frame in self._frames():
                if self._stop.is_set():
                    break
                mask = self._infer(frame)
                self._put(self._outbox, (frame, mask))
                del frame, mask  # the output thread owns them now
                if self.on_frame:
                    self.on_frame(self.stats)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: stop taking frames, keep what is done
            interrupted = exc
            self.stats.stop_reason = "interrupted"
        finally:
            self._stop.set()
            self._put(self._outbox, _END)
            output.join()
            self._finish(capture)
        sink_error = next((e for e in self._errors if not isinstance(e, StopStream)), None)
        if any(isinstance(e, StopStream) for e in self._errors):
            self.stats.stop_reason = "closed by the user"
        if sink_error is not None:
            self.sink.abort()
            raise sink_error
        self.sink.close()
        if interrupted is not None:
            raise interrupted
        return self.stats

    def _finish(self, capture: threading.Thread) -> None:
        self._stop.set()
        while capture.is_alive():  # drain, so that a capture blocked on a full queue can end
            try:
                self._inbox.get(timeout=0.05)
            except queue.Empty:
                pass
        capture.join()
        self.source.close()
        self.stats.ended = time.perf_counter()
        if self.stats.stop_reason == "running":
            self.stats.stop_reason = "stopped"
