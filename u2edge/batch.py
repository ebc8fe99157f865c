"""Masks for many image files on Ray Data: a pool of actors, each with one ``U2EdgeEngine``.

The driver plans every output (under its input's own name), then Ray Data hands the planned
(input, output) rows to the actors, a batch at a time. Each actor reads and decodes its rows'
files itself with ``read_image`` (the same checks as ``u2edge image``, the pixel limit read from
the header before the file), runs ``engine.batch`` on them, renders and writes each output
atomically, and returns one status row per input: empty for written, else the one-line problem.
So one corrupt file is reported on its own row, and no failure is left to Ray's error budget
(``max_errored_blocks`` drops whole blocks of good images without a word). Reading in the actors
rather than in ``read_binary_files`` tasks also keeps a file that cannot be read (or a bomb) on
its own row instead of failing a read task, and leaves no reader task for the pool to starve.

An actor whose process dies (a crash, the OOM killer) is restarted by Ray, and its batch is run
again (``max_task_retries``): outputs are written atomically, so the rerun simply replaces them.
Inputs and the output folder must be at the same paths on every node (a shared file system).

Ray needs Python 3.10 or newer, and is imported only here, only when a job runs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import ImageError, MissingDependencyError, U2EdgeError
from .images import read_image, write_image
from .render import Background, Mode, render

__all__ = ["RAY_PYTHON", "DEFAULT_BATCH_SIZE", "BatchResult", "EngineFailure", "Pool", "Row", "MaskWriter",
           "check_python", "plan_pool", "connect", "run_batch"]

log = logging.getLogger("u2edge")

RAY_PYTHON = (3, 10)  # Ray 2.5x wheels exist for Python 3.10 and newer only
DEFAULT_BATCH_SIZE = 8  # rows an actor gets at once: each batch is one Ray task, retried whole
MAX_TASK_RETRIES = 3  # a batch whose actor dies this many times more stops the job: it would crash forever
CRASH_ONCE_ENV = "U2EDGE_BATCH_CRASH_ONCE"  # tests only: "NAME:MARKER", see MaskWriter._crash_once


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:2])) -> None:
    """One line when this Python is too old for Ray (JetPack 5 has 3.8)."""
    if version < RAY_PYTHON:
        raise U2EdgeError(f"u2edge batch runs on Ray Data, which needs Python {RAY_PYTHON[0]}.{RAY_PYTHON[1]}+ "
                          f"(this is {version[0]}.{version[1]}; JetPack 5 has 3.8); on one machine use "
                          "u2edge image INPUT... -o OUTDIR, which runs the same model with the same options")


def _import_ray():
    check_python()
    try:
        import ray
        import ray.data  # noqa: F401  (pyarrow and pandas come with it)
    except ImportError as exc:
        raise MissingDependencyError(f"u2edge batch needs Ray Data but it cannot be imported ({exc}); install it "
                                     "with: pip install 'u2edge[ray]'") from exc
    return ray


# --- the actor pool's size -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Pool:
    """The actor pool: up to ``actors`` actors of ``cpus`` CPUs and ``gpus`` GPUs each, fed
    ``batch_size`` rows a call; ``fits`` says whether the cluster holds all of them now."""

    actors: int
    cpus: int
    gpus: float
    batch_size: int
    fits: bool = True


def plan_pool(nodes: list[dict[str, float]], *, actors: int | None = None, gpus_per_actor: float = 0,
              batch_size: int = DEFAULT_BATCH_SIZE) -> Pool:
    """Size the pool for a cluster whose alive nodes have these resources (``{"CPU": 8, "GPU": 1}``).

    One CPU of the cluster is left to the driver and Ray's own work (measured on 2 CPUs: 2 actors of
    one CPU each left reading none, and the job hung). On CPUs, the others are shared out among the
    actors (one each by default); each engine runs as many threads as its actor has CPUs. With
    GPUs, an actor takes ``gpus_per_actor`` and one CPU, and there is one per GPU share by default.
    """
    if actors is not None and actors < 1:
        raise U2EdgeError(lambda spell: f"{spell('actors')} {actors} must be at least 1")
    if gpus_per_actor < 0:
        raise U2EdgeError(lambda spell: f"{spell('gpus_per_actor')} {gpus_per_actor:g} must be 0 (CPUs) or more")
    if batch_size < 1:
        raise U2EdgeError(lambda spell: f"{spell('batch_size')} {batch_size} must be at least 1")
    total_cpus = int(sum(node.get("CPU", 0) for node in nodes))
    largest = int(max((node.get("CPU", 0) for node in nodes), default=0))
    if total_cpus < 1:
        raise U2EdgeError("the Ray cluster has no CPU; its nodes must offer at least one")
    if gpus_per_actor:
        total_gpus = sum(node.get("GPU", 0) for node in nodes)
        most = max((node.get("GPU", 0) for node in nodes), default=0)
        if most < gpus_per_actor:
            raise U2EdgeError(lambda spell: f"{spell('gpus_per_actor')} {gpus_per_actor:g}: no node of the Ray cluster "
                                            f"has that many GPUs (the most is {most:g}); give at most {most:g}, or "
                                            f"drop {spell('gpus_per_actor')} to run on CPUs")
        room = int(total_gpus // gpus_per_actor)
        count = actors or room
        return Pool(count, 1, gpus_per_actor, batch_size, fits=count <= room)
    usable = max(1, total_cpus - 1)
    count = actors or usable
    cpus = min(max(1, usable // count), largest)
    return Pool(count, cpus, 0, batch_size, fits=count * cpus <= usable)


# --- the actor -----------------------------------------------------------------------------------------

@dataclass
class Row:
    """What became of one input: ``error`` is empty when its output was written; ``seconds`` is the
    actor's time for the batch, shared out over its rows."""

    index: int
    input: str
    output: str
    error: str = ""
    height: int = 0
    width: int = 0
    seconds: float = 0.0
    pid: int = 0  # the actor's process: a restarted actor has another


class EngineFailure(U2EdgeError):
    """The engine could not be opened in an actor: the job cannot go on."""


class MaskWriter:
    """The actors' callable: opens one ``U2EdgeEngine`` (``engine``: its keyword arguments), then
    turns each batch of planned (input, output) rows into written outputs and status rows.
    ``flags`` spells parameter names in messages (the CLI's flags)."""

    def __init__(self, engine: dict, mode: str = Mode.MASK.value, background: Background | None = None,
                 max_pixels: int | None = None, threads: int | None = None, flags: dict | None = None,
                 crash_once: str | None = None) -> None:
        from .engine import U2EdgeEngine

        self.flags = dict(flags or {})
        self.mode, self.background, self.max_pixels = Mode(mode), background, max_pixels
        self.crash_once = crash_once
        options = dict(engine)
        path = options.pop("path", None)
        # CPU backends (OpenVINO, ONNX Runtime) run as many threads as the actor has CPUs, so that actors
        # sharing a node do not oversubscribe it; other backends take no thread count
        if threads and (path is None or Path(path).suffix.lower() == ".onnx"):
            options["threads"] = threads
        self.failure = None
        try:
            self.engine = U2EdgeEngine(path, **options)
        except U2EdgeError as exc:  # reported by the driver, once, as the job's one line
            self.engine, self.failure = None, exc.message(self.spell)
        else:
            log.debug("actor %d: %s", os.getpid(), self.engine.describe())

    def spell(self, name: str) -> str:
        return self.flags.get(name, name)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        rows = [Row(int(i), str(src), str(out), pid=os.getpid())
                for i, src, out in zip(batch["index"], batch["input"], batch["output"])]
        if self.failure is not None:
            for row in rows:
                row.error = self.failure
            return self._columns(rows, fatal=True)
        frames, read = [], []
        for row in rows:
            try:
                frames.append(read_image(row.input, max_pixels=self.max_pixels))
                read.append(row)
            except ImageError as exc:  # read_image names the file
                row.error = exc.message(self.spell)
        for row, frame, mask in zip(read, frames, self.engine.batch(frames) if frames else []):
            self._crash_once(row.input)
            try:
                write_image(row.output, render(frame, mask, self.mode, self.background))
                row.height, row.width = frame.shape[:2]
            except U2EdgeError as exc:  # no room, no such folder on this node: this row's problem
                row.error = exc.message(self.spell)
        seconds = (time.perf_counter() - started) / len(rows)
        for row in rows:
            row.seconds = seconds
        return self._columns(rows)

    @staticmethod
    def _columns(rows: list[Row], fatal: bool = False) -> dict[str, np.ndarray]:
        return {"index": np.array([r.index for r in rows], np.int64),
                "input": np.array([r.input for r in rows], object),
                "output": np.array([r.output for r in rows], object),
                "error": np.array([r.error for r in rows], object),
                "height": np.array([r.height for r in rows], np.int64),
                "width": np.array([r.width for r in rows], np.int64),
                "seconds": np.array([r.seconds for r in rows], np.float64),
                "pid": np.array([r.pid for r in rows], np.int64),
                "fatal": np.full(len(rows), fatal)}

    def _crash_once(self, path: str) -> None:
        """Tests only: with ``crash_once`` = "NAME:MARKER", this process dies (a real crash, no
        cleanup) before writing the output of the input named NAME, the first time only: MARKER is
        created first, and once it exists nothing happens."""
        if not self.crash_once:
            return
        name, _, marker = self.crash_once.partition(":")
        if Path(path).name != name:
            return
        try:
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            return
        os._exit(70)


# --- the driver ----------------------------------------------------------------------------------------

def _local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# what u2edge asked for (no progress bars: it draws its own) or reports in its own words (a job stopped)
_NOISE = ("Progress bars disabled", "An exception was raised from a task of operator")


class _Noise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_NOISE)


def _quiet_ray() -> None:
    """Ray's and Ray Data's console lines: warnings and errors only (their log files keep all), less
    the ones about what u2edge asked for."""
    for name in ("ray", "ray.data"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(max(handler.level, logging.WARNING))
                if not any(isinstance(f, _Noise) for f in handler.filters):
                    handler.addFilter(_Noise())


@contextlib.contextmanager
def connect(address: str | None = None, *, verbose: bool = False) -> Iterator:
    """Ray, connected to the cluster at ``address`` (``ray start``, KubeRay; ``auto`` finds a local
    one), or to a private Ray started on this machine and stopped at the end. Usage reporting is
    off in both; the private one has no dashboard and lives on loopback alone. Meanwhile stdout is
    stderr: Ray prints the cluster's error messages (a worker that died, a task retried) on stdout,
    which keeps only the caller's results."""
    # read by Ray as it starts, in this process and in every process it starts
    settings = {"RAY_USAGE_STATS_ENABLED": "0"}
    if address is None:
        # Ray's own single-machine mode (as on macOS and Windows): the node's address is loopback, found
        # without probing a route to a public host (read when ray is first imported, and by Ray's processes);
        # token authentication, which Ray 2.60 turns on for a new local cluster, asked for so that Ray does
        # not warn about it on every run
        settings.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "token"))
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            with _connected(address, verbose) as ray:
                yield ray
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """For a HOST:PORT address, a ConnectionError unless something listens there: Ray itself would
    retry a cluster that is down for minutes, in silence but for its own warnings."""
    if address == "auto" or "://" in address:  # found by Ray in this machine's session files; Ray Client
        return
    host, _, port = address.rpartition(":") if address.rpartition(":")[2].isdigit() else (address, "", "6379")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers on {host}:{port}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def _connected(address: str | None, verbose: bool) -> Iterator:
    ray = _import_ray()
    if not verbose:
        _quiet_ray()
    if ray.is_initialized():  # a Python caller's own Ray: use it as it is, and leave it running
        yield ray
        return
    options = {"include_dashboard": False, "log_to_driver": verbose,
               "logging_level": logging.INFO if verbose else logging.WARNING}
    main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        if address is None:
            ray.init(num_cpus=_local_cpus(), **options)
        else:
            _check_reachable(address)
            ray.init(address=address, **options)
    except ConnectionError as exc:
        reason = str(exc)  # the lambda outlives the name exc
        raise U2EdgeError(lambda spell: f"cannot reach a Ray cluster at {spell('address')} {address} ({reason}); "
                                        f"start one with: ray start --head, or drop {spell('address')} for a "
                                        "private Ray on this machine; a cluster with token authentication (Ray "
                                        "2.60 turns it on where ~/.ray/auth_token exists) also needs "
                                        "RAY_AUTH_MODE=token here") from exc
    finally:
        if main_thread:  # ray.init takes SIGTERM over; the caller's handler unwinds cleanly
            signal.signal(signal.SIGTERM, sigterm)
    try:
        yield ray
    finally:
        ray.shutdown()


@dataclass
class BatchResult:
    """One ``Row`` per job, in the jobs' order; the pool they ran on; and, when the Ray job stopped
    before the end, why (the rows it did not reach say "not processed")."""

    rows: list[Row]
    pool: Pool
    stopped: U2EdgeError | None = None


def run_batch(jobs: list[tuple[Path, Path]], *, engine: dict, mode: Mode | str = Mode.MASK,
              background: Background | None = None, max_pixels: int | None = None, address: str | None = None,
              actors: int | None = None, gpus_per_actor: float = 0, batch_size: int = DEFAULT_BATCH_SIZE,
              flags: dict | None = None, verbose: bool = False,
              on_row: Callable[[Row], None] | None = None) -> BatchResult:
    """Write the planned (input, output) ``jobs`` on Ray, with an engine opened from ``engine``
    (``U2EdgeEngine``'s keyword arguments, the model file as ``path``) in each actor; ``on_row``
    sees each row as it comes. An engine that cannot be opened is an ``EngineFailure``."""
    check_python()
    mode = Mode(mode)
    rows: dict[int, Row] = {}
    stopped = None
    with connect(address, verbose=verbose) as ray:
        from ray.data import ActorPoolStrategy, DataContext
        from ray.exceptions import RayError, RayTaskError

        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        pool = plan_pool(nodes, actors=actors, gpus_per_actor=gpus_per_actor, batch_size=batch_size)
        if not pool.fits:
            log.warning("the Ray cluster has room for fewer than %d actors of %d CPU and %g GPU now; starting "
                        "with those that fit, the others as nodes join", pool.actors, pool.cpus, pool.gpus)
        log.debug("Ray: %d node(s); up to %d actor(s) of %d CPU, %g GPU; %d rows a batch",
                  len(nodes), pool.actors, pool.cpus, pool.gpus, pool.batch_size)
        context = DataContext.get_current()
        context.enable_progress_bars = False  # u2edge counts the rows itself; two bars would fight over the line
        context.print_on_execution_start = verbose
        items = [{"index": i, "input": str(src), "output": str(out)} for i, (src, out) in enumerate(jobs)]
        # one block per batch: each batch is one task, so the batches spread over the actors, and a
        # batch whose actor died is run again on its own
        dataset = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / pool.batch_size)))
        with warnings.catch_warnings():
            # Ray 2.60 deprecates actor options (max_restarts, max_task_retries) as keywords, but has no
            # other way yet to bound the retries of a batch whose actor keeps dying
            warnings.simplefilter("ignore", DeprecationWarning)
            statuses = dataset.map_batches(
                MaskWriter, batch_size=pool.batch_size, batch_format="numpy",
                compute=ActorPoolStrategy(min_size=1, max_size=pool.actors, initial_size=pool.actors),
                num_cpus=pool.cpus, num_gpus=pool.gpus or None,
                fn_constructor_kwargs={"engine": engine, "mode": mode.value, "background": background,
                                       "max_pixels": max_pixels, "threads": None if pool.gpus else pool.cpus,
                                       "flags": flags, "crash_once": os.environ.get(CRASH_ONCE_ENV)},
                max_restarts=-1, max_task_retries=MAX_TASK_RETRIES)
        try:
            for batch in statuses.iter_batches(batch_size=None, batch_format="numpy"):
                for row in _rows(batch):
                    rows[row.index] = row
                    if on_row is not None:
                        on_row(row)
        except RayTaskError:  # an exception in u2edge's own code in an actor: a bug, with its traceback
            raise
        except RayError as exc:  # the cluster's trouble: an actor that keeps dying, a node lost
            stopped = _stopped(exc, len(rows), len(jobs))
    for index, (src, out) in enumerate(jobs):
        if index not in rows:
            if stopped is None:  # Ray Data returns every row or raises: this would be a bug
                raise RuntimeError(f"Ray Data returned no status row for {src}")
            rows[index] = Row(index, str(src), str(out), f"{src}: no status: the Ray job stopped before its batch "
                                                         "reported")
    return BatchResult([rows[i] for i in range(len(jobs))], pool, stopped)


def _rows(batch: dict[str, np.ndarray]) -> Iterator[Row]:
    for k in range(len(batch["index"])):
        row = Row(int(batch["index"][k]), str(batch["input"][k]), str(batch["output"][k]), str(batch["error"][k]),
                  int(batch["height"][k]), int(batch["width"][k]), float(batch["seconds"][k]), int(batch["pid"][k]))
        if batch["fatal"][k]:
            raise EngineFailure(row.error)
        yield row


def _stopped(exc: Exception, done: int, total: int) -> U2EdgeError:
    log.debug("the Ray job stopped: %s", exc)
    reason = type(exc).__name__
    return U2EdgeError(lambda spell: f"the Ray job stopped after {done} of {total} images ({reason}); an actor that "
                                     f"dies {MAX_TASK_RETRIES + 1} times on one batch (a crash in a decoder or a "
                                     f"backend, or the OOM killer) stops it: rerun with a smaller "
                                     f"{spell('batch_size')} to narrow it down, and see the workers' logs (ray logs)")
