"""Drive one RTSP scenario: RTSP servers (tests/rtsp_server.py) and a ``u2edge`` client, each started
when the one before says so, and a JSON record of what each printed and how it ended.

Run it inside a private network namespace (tests/netns.py), with the Python that has u2edge:

    python tests/rtsp_scenario.py spec.json result.json

spec.json: ``{"servers": [{"args": [...], "after": null | "TEXT"}, ...], "client": [...], "deadline": S,
"server_python": "/usr/bin/python3"}`` (the Python with GstRtspServer; that one by default).
A server with ``"after": null`` starts before the client; one with ``"after": "TEXT"`` starts when
the client's stderr has a line holding TEXT (e.g. "retry 1 of": once it saw the stream lost). Every
server is awaited until it prints ``ready``. ``client`` is the argument list of ``python -m u2edge``.
No wait is a sleep: each waits for a line or an exit, up to the deadline (seconds, for the whole
run); a missed one is recorded in ``"failure"``, and everything still running is then killed.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from netns import driver_main

SERVER = Path(__file__).with_name("rtsp_server.py")


class Process:
    """A child whose stdout and stderr lines are collected as they come (by two threads)."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._ended: set[str] = set()  # streams at their end: the process is exiting
        self._changed = threading.Condition()
        # killed if the driver dies (util-linux's setpriv, like unshare), so that no server outlives the run
        self.proc = subprocess.Popen(["setpriv", "--pdeathsig", "KILL", "--", *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self._readers = [threading.Thread(target=self._read, args=(stream,), daemon=True)
                         for stream in ("stdout", "stderr")]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: str) -> None:
        for line in getattr(self.proc, stream):
            with self._changed:
                self.lines[stream].append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._ended.add(stream)
            self._changed.notify_all()

    def wait_line(self, stream: str, text: str, deadline: float) -> bool:
        """Whether a line holding ``text`` came on ``stream`` before it ended or the deadline passed."""
        def seen() -> bool:
            return any(text in line for line in self.lines[stream])

        with self._changed:
            self._changed.wait_for(lambda: seen() or stream in self._ended, max(0.0, deadline - time.monotonic()))
            return seen()

    def finish(self, deadline: float) -> int | None:
        """The exit code, or None if it did not exit before the deadline (it is killed then)."""
        try:
            return self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return None
        finally:
            self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for reader in self._readers:
            reader.join()

    def record(self) -> dict:
        return {"argv": self.argv, "returncode": self.proc.returncode, **self.lines}


def run(spec: dict) -> dict:
    """Start the servers and the client as the spec says; their record, and the first wait missed."""
    deadline = time.monotonic() + spec.get("deadline", 120)
    server_argv = [spec.get("server_python", "/usr/bin/python3"), str(SERVER)]
    servers: list[Process] = []
    client: list[Process] = []

    def start_server(args: list[str]) -> bool:
        """Whether it started and printed ready."""
        servers.append(Process([*server_argv, *map(str, args)]))
        return servers[-1].wait_line("stdout", "ready", deadline)

    def steps() -> str | None:
        for index, server in enumerate(spec["servers"]):
            if server.get("after") is None and not start_server(server["args"]):
                return f"server {index} did not print ready"
        client.append(Process([sys.executable, "-m", "u2edge", *map(str, spec["client"])]))
        for index, server in enumerate(spec["servers"]):
            if server.get("after") is None:
                continue
            if not client[0].wait_line("stderr", server["after"], deadline):
                return f"the client printed no line holding {server['after']!r} on stderr"
            if not start_server(server["args"]):
                return f"server {index} did not print ready"
        if client[0].finish(deadline) is None:
            return "the client did not exit before the deadline"
        return None

    try:
        failure = steps()
    finally:
        for process in [*client, *servers]:
            process.stop()
    return {"failure": failure, "client": client[0].record() if client else None,
            "servers": [server.record() for server in servers]}


if __name__ == "__main__":
    driver_main(run)
