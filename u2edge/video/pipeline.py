"""The frame pipeline: capture, inference and render/write overlap in three threads.

    capture thread  --(live: newest frame only | files: bounded queue)-->  inference (caller's thread)
    inference       --(bounded queue)-->  render + write thread

A live source keeps only its newest frame: a frame not yet taken when the next one arrives is
dropped and counted, so latency stays bounded by one frame. Files and folders go through a
bounded queue, losslessly and in order. Every stage times itself; memory is bounded by the queues.
``max_frames`` counts frames delivered (written to the sink, or yielded), not frames captured: a
live source's dropped frames do not count. ``smooth`` steadies the masks over time (``smooth.py``).
A failing source is retried with backoff (live ones reopened) a bounded number of times, then the
stream ends cleanly; a corrupt frame is skipped and counted. A frame carries its source's tag (an
image file's path) through to the sink, so that a sink can write each frame to its own file.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..engine import Pending
from ..errors import ImageError, SourceError
from .sinks import Sink, StopStream
from .smooth import MaskSmoother
from .sources import CorruptFrame, Source

__all__ = ["Pipeline", "Stats", "Frame", "NewestSlot", "END"]

log = logging.getLogger("u2edge")

END = object()  # the end of the stream, queued behind the last frame
STUCK_READ_SECONDS = 5.0  # how long stopping waits for a source's read to return


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


class NewestSlot:
    """A one-frame slot: ``put`` replaces an untaken frame (and counts it dropped). The end of the
    stream queues behind the last frame instead of replacing it."""

    def __init__(self, stats: Stats) -> None:
        self._cond = threading.Condition()
        self._item = None
        self._ended = False
        self._stats = stats

    def put(self, item) -> None:
        with self._cond:
            if item is END:
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
                return END
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
    ``max_frames`` stops after that many frames written (or yielded). ``smooth`` (0 to 1, None: off)
    is the ``MaskSmoother`` strength applied to the masks in order.
    """

    def __init__(self, source: Source, engine, sink: Sink | None = None, *,
                 render: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None, queue_size: int = 4,
                 retries: int = 5, backoff: float = 0.25, max_frames: int | None = None,
                 smooth: float | None = None, on_frame: Callable[[Stats], None] | None = None,
                 on_corrupt: Callable[[CorruptFrame], None] | None = None) -> None:
        self.source, self.engine, self.sink = source, engine, sink
        self.render = render
        self._smoother = MaskSmoother(smooth) if smooth else None
        self.retries, self.backoff, self.max_frames = retries, backoff, max_frames
        self.on_frame, self.on_corrupt = on_frame, on_corrupt
        self.stats = Stats()
        self._stop = threading.Event()
        self._inbox = NewestSlot(self.stats) if source.live else queue.Queue(maxsize=queue_size)
        self._outbox: queue.Queue = queue.Queue(maxsize=queue_size)
        self._source_error: BaseException | None = None  # from the capture thread
        self._sink_error: BaseException | None = None  # from the output thread (StopStream: the user closed it)

    # --- capture -------------------------------------------------------------------------------
    def _capture(self) -> None:
        stats, failures, index = self.stats, 0, 0
        try:
            while not self._stop.is_set():
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
                        except SourceError:  # the next read says why, and is retried
                            pass
                    continue
                if image is None:
                    stats.stop_reason = "end of source"
                    break
                failures = 0
                stats.add("capture", time.perf_counter() - t0)
                stats.captured += 1
                self._put(self._inbox, Frame(image, index, time.perf_counter(), self.source.tag))
                index += 1
        except BaseException as exc:  # a bug in a source: end the stream, keep what was written, report it
            self._source_error = exc
        finally:
            self._put(self._inbox, END)

    def _put(self, box, item) -> None:
        if isinstance(box, NewestSlot):
            box.put(item)
            return
        while True:  # a bounded queue: wait for room, unless the pipeline is stopping
            try:
                box.put(item, timeout=0.1)
                return
            except queue.Full:
                if self._stop.is_set() and item is not END:
                    return

    # --- inference -----------------------------------------------------------------------------
    def _masks(self) -> Iterator[tuple[Frame, np.ndarray]]:
        """(frame, mask) in order, keeping up to ``engine.in_flight`` frames under way: the next
        frame is submitted before the oldest is collected, unless none is ready yet."""
        engine, stats = self.engine, self.stats
        pending: deque[tuple[Frame, Pending]] = deque()
        try:
            while not self._stop.is_set():
                frame = self._next_frame(block=not pending)
                if frame is END:
                    break
                if frame is not None:
                    try:
                        pending.append((frame, engine.submit([frame.image])))
                    except ImageError as exc:  # a frame the engine cannot take: skip it, like a corrupt one
                        stats.corrupt += 1
                        log.warning("skipping frame %d: %s", frame.index, exc)
                    if len(pending) < engine.in_flight:
                        continue
                if pending:  # the oldest is due, or nothing new is ready: finish it
                    frame, batch = pending.popleft()
                    yield frame, self._collect(frame, batch)
            while pending and not self._stop.is_set():
                frame, batch = pending.popleft()
                yield frame, self._collect(frame, batch)
        finally:
            engine.discard([batch for _, batch in pending])

    def _collect(self, frame: Frame, batch: Pending) -> np.ndarray:
        mask = self.engine.collect(batch)[0]
        for stage, seconds in batch.seconds.items():
            self.stats.add(stage, seconds)
        if self._smoother is not None:  # in frame order: each mask is averaged with the one before
            t0 = time.perf_counter()
            mask = self._smoother(frame.image, mask)
            self.stats.add("postprocess", time.perf_counter() - t0)
        self.stats.processed += 1
        return mask

    def _delivered(self, count: int) -> bool:
        """Whether ``count`` frames delivered reach ``max_frames`` (then the stream stops there)."""
        if self.max_frames is None or count < self.max_frames:
            return False
        self.stats.stop_reason = "max frames"
        self._stop.set()
        return True

    def _next_frame(self, block: bool):
        """The next frame, ``END``, or None when ``block`` is false and no frame is ready."""
        while True:
            try:
                return self._inbox.get(timeout=0.1 if block else 0)
            except queue.Empty:
                if not block:
                    return None

    # --- render and write ----------------------------------------------------------------------
    def _output(self) -> None:
        stats = self.stats
        try:
            while True:
                item = self._outbox.get()
                if item is END:
                    return
                if self.max_frames is not None and stats.written >= self.max_frames:
                    continue  # frames under way when the limit was reached
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
                self._delivered(stats.written)
        except BaseException as exc:  # StopStream, a full disk: stop everything, report it in run()
            self._sink_error = exc
            self._stop.set()
            while self._outbox.get() is not END:  # let the inference thread finish its puts
                pass

    # --- driving -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(frame, mask) pairs; the capture thread runs ahead (newest frame only, if live). A source
        that fails with an error other than a read error ends the loop with a SourceError."""
        capture = threading.Thread(target=self._capture, name="u2edge-capture", daemon=True)
        capture.start()
        try:
            for delivered, (frame, mask) in enumerate(self._masks(), 1):
                yield frame.image, mask
                self.stats.latencies.append(time.perf_counter() - frame.captured)
                if self._delivered(delivered):
                    break
        finally:
            self._finish(capture)
        if self._source_error is not None:
            raise SourceError(self.stats.error) from self._source_error

    def run(self) -> Stats:
        """Run to the end of the source (or max_frames, a failure, Ctrl-C); the sink is finalized.

        Ctrl-C and SIGTERM end the stream cleanly and are then re-raised. Only a sink error (a full
        disk) discards the output: it is raised after the pipeline has stopped. A source that fails
        (after its retries, or with a bug) ends the stream with ``stats.error`` set, and an engine
        error is raised; either way what was written is kept and finalized.
        """
        if self.sink is None:
            raise ValueError("Pipeline.run() needs a sink; iterate over the pipeline to get masks instead")
        capture = threading.Thread(target=self._capture, name="u2edge-capture", daemon=True)
        output = threading.Thread(target=self._output, name="u2edge-output", daemon=True)
        capture.start()
        output.start()
        stopped: BaseException | None = None
        try:
            for frame, mask in self._masks():
                self._put(self._outbox, (frame, mask))
                del frame, mask  # the output thread owns them now
                if self.on_frame:
                    self.on_frame(self.stats)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: stop taking frames, keep what is done
            stopped = exc
            self.stats.stop_reason = "interrupted"
        except BaseException as exc:  # the engine failed: keep what is done, then raise it
            stopped = exc
            self.stats.stop_reason = "engine failed"
        finally:
            self._stop.set()
            self._put(self._outbox, END)
            output.join()
            self._finish(capture)
        if isinstance(self._sink_error, StopStream):
            self.stats.stop_reason = "closed by the user"
        elif self._sink_error is not None:
            self.sink.abort()
            raise self._sink_error
        self.sink.close()
        if stopped is not None:
            raise stopped
        return self.stats

    def _finish(self, capture: threading.Thread) -> None:
        self._stop.set()
        deadline = time.monotonic() + STUCK_READ_SECONDS
        while capture.is_alive() and time.monotonic() < deadline:  # drain: a capture blocked on a full queue ends
            try:
                self._inbox.get(timeout=0.05)
            except queue.Empty:
                pass
        if capture.is_alive():  # stuck in a read (a stalled network share or stream): the sink is not held up
            log.warning("%s did not return from a read within %.0f s; stopping without it", self.source.uri,
                        STUCK_READ_SECONDS)
        else:
            self.source.close()  # not while a read may still be using it
        self.stats.ended = time.perf_counter()
        if self._source_error is not None:
            exc = self._source_error
            log.debug("the source failed with this traceback:", exc_info=exc)  # a bug: its traceback, on request
            self.stats.stop_reason = "source failed"
            self.stats.error = f"{self.source.uri} failed after {self.stats.captured} frames ({type(exc).__name__}: {exc})"
        if self.stats.stop_reason == "running":
            self.stats.stop_reason = "stopped"
