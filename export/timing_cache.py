"""``TimingCache``: the kernel timings of earlier builds, in one file per TensorRT version and GPU
that every build on the machine shares, so that a rebuild skips the tactic measurements.

A build starts from the file and, when it ends, merges what it measured into the file under the
file's lock: it reads what is there now (other builds may have written it meanwhile), combines it
with its own (``ITimingCache.combine``, as Polygraphy does) and writes the result atomically.
Concurrent builds therefore add to the cache; none overwrites another's timings.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from .._files import locked, write_bytes_atomic
from ..cuda import device_identity
from ..errors import OutputError
from ..trtcompat import TensorRT
from ..weights import cache_dir

__all__ = ["TimingCache"]

log = logging.getLogger("u2edge")


class TimingCache:
    """The timing cache file ``path``, the ``timing_cache`` of a build."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")

    @classmethod
    def default(cls, trt: TensorRT) -> "TimingCache":
        """The user cache's file for this TensorRT and the GPU builds run on."""
        gpu = device_identity() or {"gpu": "unknown", "compute_capability": "x"}
        name = f"{trt.flavour}-{trt.version}-{gpu['gpu']}-sm{gpu['compute_capability']}"
        return cls(cache_dir() / "timing" / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".cache"))

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise OutputError(lambda spell: f"cannot read the {spell('timing_cache')} {self.path}: "
                                            f"{exc.strerror}") from exc

    def load(self, trt: TensorRT, config) -> None:
        """Start the builder ``config`` from the file (an empty cache if there is none, or it does not fit)."""
        if not config.set_timing_cache(config.create_timing_cache(self._read()), False):
            log.warning("timing cache %s does not fit %s; starting a new one", self.path, trt.name)
            config.set_timing_cache(config.create_timing_cache(b""), False)

    def save(self, trt: TensorRT, config) -> None:
        """Merge the timings of ``config`` (after a build) into the file, under its lock."""
        ours = config.get_timing_cache()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(lambda spell: f"cannot create the folder of the {spell('timing_cache')} {self.path}: "
                                            f"{exc.strerror}") from exc
        with locked(self.lock_path, lambda: log.info("waiting for another build to write the timing cache %s",
                                                     self.path)):
            theirs = self._read()
            if theirs and not trt.combine_timing_caches(ours, config.create_timing_cache(theirs)):
                log.warning("cannot merge the timing cache %s with %s; this build's timings replace it",
                            self.path, trt.name)
            write_bytes_atomic(self.path, bytes(ours.serialize()))
