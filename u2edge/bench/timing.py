"""Timing loops shared by the benchmark workers. Standard library only: the rembg peer, which
runs in rembg's own environment without u2edge installed, imports this file too."""

import resource
import sys
import time

__all__ = ["measure", "peak_rss_mb"]


def measure(run_one, items, repeats):
    """One warm-up pass over ``items`` (excluded), then ``repeats`` timed passes.

    Returns the latency of every call in seconds and the throughput (items/s) of every pass, so
    that a caller can report percentiles and the spread between passes.
    """
    for item in items:
        run_one(item)
    latencies, passes = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        for item in items:
            start = time.perf_counter()
            run_one(item)
            latencies.append(time.perf_counter() - start)
        passes.append(len(items) / (time.perf_counter() - started))
    return {"latencies": latencies, "passes": passes}


def peak_rss_mb():
    """This process's peak resident memory. On Linux, VmHWM: getrusage's ru_maxrss survives fork
    and exec, so a worker would report its parent's peak if that was higher."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (1 << 20) if sys.platform == "darwin" else peak / 1024, 1)
