"""Drive one Triton scenario: ``u2edge`` commands (a server among them) and in-process engines, step by
step, and a JSON record of what each printed, returned or raised.

Run it inside a private network namespace (tests/netns.py), with the Python that has u2edge:

    python tests/triton_scenario.py spec.json result.json

spec.json: ``{"deadline": S, "steps": [STEP, ...]}``, each step named by ``"name"`` and one of:
  ``{"start": ARGV, "ready": TEXT}``  start a process and wait for a stdout line holding TEXT
  ``{"run": ARGV}``                   run a process to its end
  ``{"stop": NAME, "signal": SIG}``   send a started process SIG (e.g. "SIGTERM") and wait for its end
  ``{"engine": URI, "options": {...}, "images": [PATH, ...], "masks": PATH}``  open ``U2EdgeEngine(URI,
      **options)`` here and run ``engine.batch`` on the images; the masks go to the .npz at PATH, in order;
      the record has its ``describe()``, the backend's request counters, or the error's one line
An ARGV that starts with "u2edge" runs ``python -m u2edge``. No wait is a sleep: each waits for a line
or an exit, up to the deadline (seconds, for the whole run); a missed one is recorded in ``"failure"``,
and everything still running is then killed.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

from netns import driver_main
from rtsp_scenario import Process


SERVER_PYTHON = os.environ.get("U2EDGE_SERVER_PYTHON", sys.executable)


def command(argv: list) -> list[str]:
    """``u2edge ...`` runs this Python's u2edge; ``u2edge-server ...`` the one of the environment that
    serves (U2EDGE_SERVER_PYTHON: pytriton pins numpy<2 there, so it is an environment of its own)."""
    argv = list(map(str, argv))
    python = {"u2edge": sys.executable, "u2edge-server": SERVER_PYTHON}.get(argv[0])
    return [python, "-m", "u2edge", *argv[1:]] if python else argv


def engine_step(step: dict) -> dict:
    """Open an engine on a server's model here, run the images through it, and say what happened."""
    from u2edge import U2EdgeEngine
    from u2edge.errors import U2EdgeError
    from u2edge.images import read_image

    record: dict = {"error": None, "error_type": None}
    try:
        with U2EdgeEngine(step["engine"], **step.get("options", {})) as engine:
            record["describe"] = engine.describe()
            masks = engine.batch([read_image(path) for path in step.get("images", [])])
            record.update(requests=engine.backend.requests, peak_in_flight=engine.backend.peak_in_flight)
        if step.get("masks"):
            np.savez(step["masks"], *masks)
    except U2EdgeError as exc:  # the one line a user would read
        record.update(error=str(exc), error_type=type(exc).__name__)
    return record


def run(spec: dict) -> dict:
    """The steps in order; their records, and the first wait missed."""
    deadline = time.monotonic() + spec.get("deadline", 120)
    started: dict[str, Process] = {}
    records: dict[str, dict] = {}

    def steps() -> str | None:
        for step in spec["steps"]:
            name = step["name"]
            if "start" in step:
                started[name] = Process(command(step["start"]))
                if not started[name].wait_line("stdout", step["ready"], deadline):
                    return f"{name} printed no line holding {step['ready']!r}"
            elif "run" in step:
                process = Process(command(step["run"]))
                if process.finish(deadline) is None:
                    records[name] = process.record()
                    return f"{name} did not exit before the deadline"
                records[name] = process.record()
            elif "stop" in step:
                process = started[step["stop"]]
                process.proc.send_signal(getattr(signal, step["signal"]))
                if process.finish(deadline) is None:
                    return f"{step['stop']} did not exit after {step['signal']} before the deadline"
            elif "engine" in step:
                records[name] = engine_step(step)
            else:
                raise ValueError(f"step {name}: no start, run, stop or engine")
        return None

    try:
        failure = steps()
    finally:
        for process in started.values():
            process.stop()
    for name, process in started.items():
        records[name] = process.record()
    return {"failure": failure, "steps": records}


if __name__ == "__main__":
    driver_main(run)
