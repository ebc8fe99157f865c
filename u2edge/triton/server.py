"""``u2edge triton serve``: a Triton Inference Server on a model repository, bound to one host.

The server is ``tritonserver`` from PATH (an NGC container, a JetPack install), else the one that
``nvidia-pytriton`` bundles (``pip install 'u2edge[triton]'``). The bundled one ships the Python
backend without its stub, so a private backend folder links the stub built for this Python; the
stub links ``libpython3.X.so`` (this interpreter's LIBDIR goes on the library path) and finds this
environment's packages only when this Python's ``bin`` comes first on PATH. Metrics are off: the
server listens on the HTTP and gRPC ports alone. ``TritonServer`` starts it and waits until every
model has loaded (one ``TritonError`` line naming a model that failed and why); ``serve`` runs it
until Ctrl-C or SIGTERM, then stops it cleanly.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from pathlib import Path

from ..backends.triton import INSTALL, TritonError
from ..errors import MissingDependencyError

__all__ = ["TritonServer", "serve", "find_tritonserver"]

log = logging.getLogger("u2edge")

START_SECONDS = 300.0  # to load every model: a large plan or a Python network on a slow CPU takes a while
STOP_SECONDS = 60.0  # after SIGINT, before the server is killed; it waits for requests under way
POLL_SECONDS = 0.1


def find_tritonserver() -> tuple[Path, bool]:
    """The ``tritonserver`` to run, and whether it is nvidia-pytriton's bundled one."""
    found = shutil.which("tritonserver")
    if found:
        return Path(found), False
    spec = importlib.util.find_spec("pytriton")  # not imported: only its files are used
    if spec is not None and spec.submodule_search_locations:
        binary = Path(list(spec.submodule_search_locations)[0]) / "tritonserver" / "bin" / "tritonserver"
        if binary.is_file():
            return binary, True
    raise MissingDependencyError(f"no tritonserver: none on PATH and nvidia-pytriton is not installed; install "
                                 f"it with: {INSTALL} (Linux x86-64 and aarch64), or run in NVIDIA's tritonserver "
                                 "container (nvcr.io/nvidia/tritonserver)")


def bundled_backends(tritonserver: Path, folder: Path) -> Path:
    """A backend folder for pytriton's server in ``folder``: its Python backend with the stub for this
    Python, by symlinks."""
    root = tritonserver.parent.parent
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        have = sorted(p.name for p in (root / "python_backend_stubs").glob("*") if p.is_dir())
        raise MissingDependencyError(f"the tritonserver of nvidia-pytriton ({root}) has no Python backend stub for "
                                     f"Python {version} (it has {', '.join(have) or 'none'}); use one of those "
                                     "Pythons, or NVIDIA's tritonserver container")
    python = folder / "python"
    python.mkdir(parents=True)
    for source in (root / "backends" / "python" / "libtriton_python.so",
                   root / "backends" / "python" / "triton_python_backend_utils.py", stub):
        (python / source.name).symlink_to(source)
    return folder


def server_env() -> dict[str, str]:
    """The environment in which the Python backend's stub runs this Python with its packages."""
    env = dict(os.environ)
    bin_dir = os.path.dirname(sys.executable)  # a venv's bin: the stub takes the first python3 on PATH as its own
    env["PATH"] = os.pathsep.join([bin_dir, *(p for p in env.get("PATH", "").split(os.pathsep) if p and p != bin_dir)])
    libdir = sysconfig.get_config_var("LIBDIR")  # libpython3.X.so of a non-system Python (pyenv, conda)
    if libdir:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH")) if p)
    return env


def _probe_host(host: str) -> str:
    """The address to reach a server bound to ``host`` from this machine."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Die with u2edge: a killed u2edge must not leave a server holding its ports (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _first_line(text: str) -> str:
    """A Triton status's first line, without its code when that says nothing ("Internal: ")."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line[len("Internal: "):] if line.startswith("Internal: ") else line


class TritonServer:
    """A ``tritonserver`` on ``repo``, listening on ``host`` (HTTP ``http_port``, gRPC ``grpc_port``).

    ``start()`` returns once every model is ready, or raises one ``TritonError`` line (a model that
    failed to load, with its reason; a server that exited, with its last error). ``stop()`` sends it
    SIGINT, waits for it, and kills it after ``STOP_SECONDS``. A context manager does both.

        with TritonServer("repo", grpc_port=8001) as server:
            ...  # clients on triton://127.0.0.1:8001/u2edge
    """

    def __init__(self, repo: str | os.PathLike, *, http_port: int = 8000, grpc_port: int = 8001,
                 host: str = "127.0.0.1", start_seconds: float = START_SECONDS) -> None:
        self.repo = Path(repo)
        self.http_port, self.grpc_port, self.host = http_port, grpc_port, host
        self.start_seconds = start_seconds
        self.models: list[str] = []
        self.version = ""
        self.log_lines: deque[str] = deque(maxlen=400)  # the server's log, for the error that ends it
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._id = f"u2edge-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # tells this server from one already on the port

    # --- starting ------------------------------------------------------------------------------
    def command(self, tritonserver: Path, backends: Path | None) -> list[str]:
        argv = [str(tritonserver), f"--id={self._id}", f"--model-repository={self.repo.resolve()}",
                f"--http-address={self.host}", f"--http-port={self.http_port}",
                f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
                "--allow-metrics=false",
                "--exit-on-error=false"]  # keep serving long enough to ask which model failed, and why
        if backends is not None:
            argv.append(f"--backend-directory={backends}")
        return argv

    def start(self) -> "TritonServer":
        if not self.repo.is_dir():
            raise TritonError(f"model repository {self.repo} is not a folder; write one with: "
                              f"u2edge triton repo -o {self.repo}")
        if not any(self.repo.glob("*/config.pbtxt")):
            raise TritonError(f"model repository {self.repo} holds no model (no */config.pbtxt); write one with: "
                              f"u2edge triton repo -o {self.repo}")
        if self.http_port == self.grpc_port:
            raise TritonError(lambda spell: f"{spell('http_port')} and {spell('grpc_port')} are both "
                                            f"{self.http_port}; give two different ports")
        tritonserver, bundled = find_tritonserver()
        self._tmp = tempfile.TemporaryDirectory(prefix="u2edge-triton-")
        try:
            backends = bundled_backends(tritonserver, Path(self._tmp.name) / "backends") if bundled else None
            argv = self.command(tritonserver, backends)
            log.debug("starting %s", " ".join(argv))
            # its own session: Ctrl-C at a terminal reaches u2edge alone, which then stops the server once;
            # it dies with the thread that starts it (PR_SET_PDEATHSIG), so start it from one that lasts
            self._proc = subprocess.Popen(argv, env=server_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True, errors="replace",
                                          start_new_session=True,
                                          preexec_fn=_child_setup if sys.platform.startswith("linux") else None)
            self._reader = threading.Thread(target=self._read_log, name="u2edge-tritonserver-log", daemon=True)
            self._reader.start()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _read_log(self) -> None:
        for line in self._proc.stdout:  # with -v; a failed request reaches its client, a failed start its line
            line = line.rstrip("\n")
            self.log_lines.append(line)
            log.debug("tritonserver: %s", line)

    def _exited(self) -> TritonError:
        self._reader.join(5)  # the last lines
        errors = [line for line in self.log_lines if line.startswith("E") and "CudaDriverHelper" not in line]
        last = errors[-1] if errors else (self.log_lines[-1] if self.log_lines else "no output")
        if "] " in last:  # Triton's prefix: severity, date, time, thread, source
            last = last.split("] ", 1)[1].strip().strip('"').split("\\n")[0].strip()  # its newlines come escaped
        code = self._proc.returncode
        if "in use" in last:
            return TritonError(lambda spell: f"tritonserver exited with code {code} serving {self.repo}: {last}; stop "
                                             f"the server on it, or give other ports ({spell('http_port')}, "
                                             f"{spell('grpc_port')})")
        return TritonError(f"tritonserver exited with code {code} serving {self.repo}: {last}")

    def _get(self, path: str, body: bytes | None = None):
        """A JSON answer of the server's HTTP API, or None while it does not answer."""
        url = f"http://{_probe_host(self.host)}:{self.http_port}{path}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
        try:
            with opener.open(urllib.request.Request(url, data=body), timeout=5) as answer:
                text = answer.read()
        except (urllib.error.URLError, OSError):  # not listening yet; HTTPError: not live yet
            return None
        return json.loads(text) if text else {}

    def _answers(self) -> bool:
        """Whether this server (not another one on the port) answers: it starts listening, gRPC then
        HTTP, once it has loaded every model."""
        return (self._get("/v2") or {}).get("name") == self._id

    def _wait_ready(self) -> None:
        """Wait until the server answers, then check every model."""
        deadline = time.monotonic() + self.start_seconds
        while not self._answers():
            if self._proc.poll() is not None:
                raise self._exited()
            if time.monotonic() > deadline:
                raise TritonError(f"tritonserver did not answer on {self.host}:{self.http_port} within "
                                  f"{self.start_seconds:g} s of starting on {self.repo}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(POLL_SECONDS)
        index = self._get("/v2/repository/index", b"{}") or []
        failed = [m for m in index if m.get("state") != "READY"]
        if failed:
            # the model that failed, with its reason, before those that depend on it (an ensemble is then
            # listed without a state or reason: it was never loaded)
            failed.sort(key=lambda m: not m.get("reason"))
            first = failed[0]
            reason = _first_line(first.get("reason", "")) or first.get("state", "not loaded")
            line = f"model {first['name']} in {self.repo} failed to load: {reason}"
            if len(failed) > 1:
                line += f" (not ready either: {', '.join(m['name'] for m in failed[1:])})"
            raise TritonError(line)
        self.models = sorted(m["name"] for m in index)
        self.version = (self._get("/v2") or {}).get("version", "")
        if self._get("/v2/health/ready") is None:
            raise TritonError(f"tritonserver on {self.repo} answers but is not ready; see its log with -v")

    # --- running -------------------------------------------------------------------------------
    def describe(self) -> str:
        return (f"serving {self.repo} on grpc {self.host}:{self.grpc_port}, http {self.host}:{self.http_port}: "
                f"models {', '.join(self.models)}")

    def wait(self) -> int:
        """Block until the server exits (0: it was stopped from outside; any other code is raised as
        its last error) or the caller is interrupted."""
        while self._proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(1.0)  # a timeout, so that Ctrl-C and SIGTERM reach this thread
        if self._proc.returncode != 0:
            raise self._exited()
        return 0

    def stop(self) -> int | None:
        """Stop the server: SIGINT, then SIGKILL after ``STOP_SECONDS``; its exit code (None if never
        started). Calling it twice is harmless."""
        proc, code = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # Triton finishes requests under way and unloads its models
                try:
                    proc.wait(STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    log.warning("tritonserver did not stop within %g s of SIGINT; killing it", STOP_SECONDS)
                    proc.kill()
                    proc.wait()
            code = proc.returncode
            if self._reader is not None:
                self._reader.join(5)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return code

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(repo: Path, *, http_port: int = 8000, grpc_port: int = 8001, host: str = "127.0.0.1") -> int:
    """``u2edge triton serve``: start a server on ``repo``, print one line once every model is ready,
    and run until Ctrl-C or SIGTERM (stopping the server cleanly, then re-raised, as the CLI expects).
    A model that fails to load, or a server that exits, is one ``TritonError`` line."""
    server = TritonServer(repo, http_port=http_port, grpc_port=grpc_port, host=host)
    with server:
        print(server.describe(), flush=True)  # the command's output: a supervisor or a test waits for it
        try:
            return server.wait()
        except KeyboardInterrupt:
            log.info("stopping tritonserver")
            code = server.stop()
            log.info("tritonserver stopped (exit code %s)", code)
            raise
