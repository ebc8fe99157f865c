"""Triton backend: a model on a Triton Inference Server, by address instead of a file.

``triton://HOST:PORT/MODEL`` speaks gRPC, ``triton+http://HOST:PORT/MODEL`` HTTP (ports 8001 and
8000 by default; MODEL ``u2edge`` by default, optionally ``/MODEL/VERSION``). The model is the
ensemble from ``u2edge triton repo``: one HxWx3 uint8 BGR frame in, its HxW float32 mask out, pre-
and post-processing on the server. So frames go up as they are and masks come back at their
size: the engine's frame path (``gpu_frames``), with each frame its own request. ``submit_frames``
sends its requests and returns at once; up to ``in_flight`` such batches may be under way. A server
that does not answer, a model it does not serve, and a request that times out are each one
``TritonError`` line. tritonclient is imported when a backend opens.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import urlsplit

import numpy as np

from ..errors import MissingDependencyError, ModelFormatError, U2EdgeError
from ..processing import Preprocessing
from .base import Backend

__all__ = ["TritonBackend", "TritonError", "TritonAddress", "SCHEMES", "INSTALL"]

log = logging.getLogger("u2edge")

INSTALL = "pip install 'u2edge[triton]'"
SCHEMES = {"triton": "grpc", "triton+http": "http"}  # URI scheme -> protocol
PORTS = {"grpc": 8001, "http": 8000}  # Triton's defaults
DEFAULT_MODEL = "u2edge"  # the ensemble that u2edge triton repo writes


class TritonError(U2EdgeError):
    """A Triton server cannot be started or reached, does not serve the model, or fails a request."""


@dataclass(frozen=True)
class TritonAddress:
    """A parsed ``triton://`` or ``triton+http://`` address."""

    uri: str
    protocol: str  # grpc | http
    host: str
    port: int
    model: str
    version: str = ""

    @classmethod
    def parse(cls, uri: str) -> "TritonAddress":
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        usage = "give triton://HOST:PORT/MODEL (gRPC) or triton+http://HOST:PORT/MODEL (HTTP)"
        if scheme not in SCHEMES:
            raise ModelFormatError(f"{uri} is not a Triton address; {usage}")
        try:
            port = parts.port
        except ValueError:
            raise ModelFormatError(f"{uri}: the port is not a number from 1 to 65535; {usage}") from None
        path = [p for p in parts.path.split("/") if p]
        if not parts.hostname or len(path) > 2 or parts.query or parts.fragment:
            raise ModelFormatError(f"{uri} is not a Triton address; {usage}")
        protocol = SCHEMES[scheme]
        return cls(uri, protocol, parts.hostname, port or PORTS[protocol], path[0] if path else DEFAULT_MODEL,
                   path[1] if len(path) > 1 else "")

    @property
    def url(self) -> str:
        """host:port as tritonclient takes it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass
class _Request:
    """One frame on its way: its answer or error arrives in gRPC's callback, or from an HTTP worker."""

    shape: tuple[int, int]
    sent: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    mask: np.ndarray | None = None
    error: Exception | None = None


def _client_modules(protocol: str):
    """tritonclient's module for ``protocol`` and its exception class."""
    try:
        if protocol == "grpc":
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
        from tritonclient.utils import InferenceServerException
    except ImportError as exc:
        raise MissingDependencyError(f"tritonclient is required for triton:// models but cannot be imported ({exc}); "
                                     f"install it with: {INSTALL}") from exc
    return client, InferenceServerException


class TritonBackend(Backend):
    """Frames to a Triton ensemble (``u2edge triton repo``), masks back; ``timeout`` seconds a request."""

    name = "triton"
    requires = "tritonclient"
    gpu_frames = True  # frames go up as uint8 and masks come back at frame size: the engine's frame path

    def __init__(self, uri: str, *, in_flight: int = 2, timeout: float = 60.0) -> None:
        if in_flight < 1:
            raise U2EdgeError(f"in_flight {in_flight} must be at least 1")
        if not timeout > 0:
            raise U2EdgeError(f"timeout {timeout} must be more than 0 seconds")
        self.address = address = TritonAddress.parse(str(uri))
        self.in_flight, self.timeout = in_flight, float(timeout)
        self.batch_size, self.max_batch = None, None  # each frame is its own request
        self._module, self._exception = _client_modules(address.protocol)
        self._lock = threading.Lock()
        self._outstanding = 0  # requests sent and not yet answered
        self.requests = 0  # requests sent so far
        self.peak_in_flight = 0  # the most requests under way at once
        self._pending: dict[int, list[_Request]] = {}  # ticket -> its requests
        self._next = 0
        self._closed = False
        if address.protocol == "grpc":
            self._client = self._module.InferenceServerClient(address.url)
        else:
            self._client = self._http_client()
            # a thread for each request under way: in_flight batches of up to 8 frames (U2EdgeEngine's default)
            self._workers = ThreadPoolExecutor(in_flight * 8, thread_name_prefix="u2edge-triton")
            self._local = threading.local()
            self._http_clients: list = []
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # --- opening -------------------------------------------------------------------------------
    def _call(self, what, *args, **kwargs):
        """A call to the server; one TritonError line if it cannot be reached."""
        if self.address.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout
        try:
            return what(*args, **kwargs)
        except self._exception as exc:
            raise self._failure(exc) from None
        except OSError as exc:  # HTTP: refused, unreachable, timed out
            raise self._failure(exc) from None

    def _failure(self, exc: Exception) -> TritonError:
        """The one line for an error from tritonclient or the socket under it."""
        uri = self.address.uri
        status = str(exc.status() if isinstance(exc, self._exception) else "") or ""
        text = (exc.message() if isinstance(exc, self._exception) else str(exc)) or type(exc).__name__
        lowered = text.lower()
        if "DEADLINE_EXCEEDED" in status or "timed out" in lowered or "timeout" in lowered or \
                isinstance(exc, TimeoutError):
            return TritonError(lambda spell: f"{uri}: no answer within {self.timeout:g} s; the server is busy or "
                                             f"stuck: raise {spell('timeout')}, or serve more instances "
                                             "(u2edge triton repo --instances N)")
        if "UNAVAILABLE" in status or isinstance(exc, ConnectionError) or "connect" in lowered:
            why = "connection refused" if "refused" in lowered else _first_line(text)
            return TritonError(f"{uri}: no server answers ({why}); start one with: u2edge triton serve REPO")
        return TritonError(f"{uri}: the server refused the request: {_first_line(text)}")

    def _open(self) -> None:
        address, client = self.address, self._client
        if not self._call(client.is_server_live):
            raise TritonError(f"{address.uri}: the server at {address.url} answers but is not live")
        if not self._call(client.is_model_ready, address.model, address.version):
            raise TritonError(f"{address.uri}: {self._why_not_ready()}")
        meta = self._call(client.get_model_metadata, address.model, address.version, **self._as_json())
        self._bind_frames(meta)
        server = self._call(client.get_server_metadata, **self._as_json())
        self.preprocessing = Preprocessing.from_metadata(self._parameters())  # for describe(): the server runs it
        where = f"{address.protocol.upper()} {address.url}, tritonserver {server.get('version', '?')}"
        self._describe = f"triton ({where}, model {address.model}, pre/post-processing on the server)"

    def _parameters(self) -> dict[str, str]:
        """The model's config parameters; for an ensemble, its first step's (u2edge_pre records the
        preprocessing there)."""
        def config(model: str, version: str = "") -> dict:
            answer = self._call(self._client.get_model_config, model, version, **self._as_json())
            return answer.get("config", answer)  # gRPC's JSON wraps it

        def strings(cfg: dict) -> dict[str, str]:
            params = cfg.get("parameters") or {}
            return {k: v.get("string_value", v.get("stringValue", "")) for k, v in params.items()}

        top = config(self.address.model, self.address.version)
        params = strings(top)
        steps = (top.get("ensemble_scheduling") or top.get("ensembleScheduling") or {}).get("step") or []
        if not params and steps:
            first = steps[0]
            params = strings(config(first.get("model_name") or first.get("modelName", "")))
        return params

    def _as_json(self) -> dict:
        return {"as_json": True} if self.address.protocol == "grpc" else {}

    def _why_not_ready(self) -> str:
        """Why the model is not ready: not in the repository (naming those that are), or failed to load."""
        model = self.address.model
        index = self._call(self._client.get_model_repository_index, **self._as_json())
        models = index.get("models", []) if isinstance(index, dict) else index
        entry = next((m for m in models if m.get("name") == model), None)
        if entry is None:
            names = ", ".join(sorted(m.get("name", "?") for m in models)) or "none"
            return (f"the server has no model {model!r} (it serves {names}); name one of those, or write a "
                    "repository with: u2edge triton repo -o REPO")
        reason = _first_line(entry.get("reason", "")) or "no reason given"
        return f"model {model!r} is {entry.get('state', 'not ready')}: {reason}"

    def _bind_frames(self, meta: dict) -> None:
        """Check that the model takes one HxWx3 uint8 frame and returns one float32 mask."""
        inputs, outputs = meta.get("inputs", []), meta.get("outputs", [])
        shape = [int(d) for d in inputs[0].get("shape", [])] if len(inputs) == 1 else []
        output = next((o for o in outputs if o.get("name") == "MASK"), outputs[0] if len(outputs) == 1 else None)
        if (len(shape) not in (3, 4) or shape[-1] != 3 or inputs[0].get("datatype") != "UINT8" or output is None
                or output.get("datatype") != "FP32"):
            seen = lambda ts: [(t.get("name"), t.get("datatype"), t.get("shape")) for t in ts]  # noqa: E731
            raise ModelFormatError(f"{self.address.uri}: model {self.address.model!r} takes {seen(inputs)} and "
                                   f"returns {seen(outputs)}; u2edge sends one UINT8 HxWx3 frame and reads one FP32 "
                                   "HxW mask: serve the ensemble 'u2edge' of u2edge triton repo")
        self.input_name, self.output_name = inputs[0]["name"], output["name"]
        self._batched = len(shape) == 4  # an ensemble with max_batch_size > 0: a leading batch of 1

    # --- running -------------------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> np.ndarray:
        raise U2EdgeError(f"{self.address.uri} takes frames, not preprocessed batches: use U2EdgeEngine on it")

    def submit_frames(self, frames: Sequence[np.ndarray], *, rgb: bool = False) -> int:
        """Send each frame as its own request, without waiting; ``collect`` returns their masks."""
        if self._closed:
            raise U2EdgeError(f"{self.address.uri}: the backend is closed")
        if len(self._pending) >= self.in_flight:
            raise U2EdgeError(f"{self.in_flight} batches are already in flight; collect one first")
        requests = []
        ticket, self._next = self._next, self._next + 1
        self._pending[ticket] = requests
        for frame in frames:
            requests.append(self._send(frame[:, :, ::-1] if rgb else frame))  # the ensemble takes BGR
        return ticket

    def _send(self, frame: np.ndarray) -> _Request:
        request = _Request(frame.shape[:2])
        data = np.ascontiguousarray(frame)[None] if self._batched else np.ascontiguousarray(frame)
        tensor = self._module.InferInput(self.input_name, list(data.shape), "UINT8")
        tensor.set_data_from_numpy(data)
        with self._lock:
            self._outstanding += 1
            self.requests += 1
            self.peak_in_flight = max(self.peak_in_flight, self._outstanding)
        address = self.address
        try:
            if address.protocol == "grpc":
                self._client.async_infer(address.model, [tensor], partial(self._answer, request),
                                         model_version=address.version, outputs=self._outputs(),
                                         client_timeout=self.timeout)
            else:
                future = self._workers.submit(self._http_infer, tensor)
                future.add_done_callback(lambda done: self._answer(request, *self._outcome(done)))
        except Exception as exc:
            self._answer(request, None, exc)
        return request

    def _outputs(self) -> list:
        return [self._module.InferRequestedOutput(self.output_name)]

    def _http_infer(self, tensor):
        """One HTTP request, in a worker thread with its own client: tritonclient.http's clients are
        not thread-safe, and its async requests report a socket timeout on stderr besides raising it."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._http_client()
            with self._lock:
                self._http_clients.append(client)
        return client.infer(self.address.model, [tensor], model_version=self.address.version,
                            outputs=self._outputs())

    def _http_client(self):
        return self._module.InferenceServerClient(self.address.url, connection_timeout=self.timeout,
                                                  network_timeout=self.timeout)

    @staticmethod
    def _outcome(future) -> tuple:
        error = future.exception()
        return (None, error) if error is not None else (future.result(), None)

    def _answer(self, request: _Request, result, error) -> None:
        """A request's answer, in gRPC's thread or an HTTP worker."""
        if error is None:
            try:
                mask = result.as_numpy(self.output_name)
                request.mask = mask[0] if self._batched else mask
            except Exception as exc:  # an answer without the mask
                error = exc
        request.error = error
        with self._lock:
            self._outstanding -= 1
        request.done.set()

    def collect(self, ticket: int) -> list[np.ndarray]:
        """Wait for a ticket's masks, in order: new HxW float32 arrays at each frame's size."""
        requests = self._pending.pop(ticket, None)
        if requests is None:
            raise U2EdgeError(f"nothing in flight for ticket {ticket}")
        for request in requests:
            self._wait(request)
        for request in requests:
            if request.error is not None:
                error = request.error
                if isinstance(error, (self._exception, OSError)):
                    raise self._failure(error) from None
                raise error
            if request.mask is None or request.mask.shape != request.shape:
                got = None if request.mask is None else request.mask.shape
                raise TritonError(f"{self.address.uri}: model {self.address.model!r} returned a mask of shape {got} "
                                  f"for a frame of {request.shape}; serve the ensemble of u2edge triton repo")
        return [np.array(request.mask, np.float32) for request in requests]  # writable copies

    def _wait(self, request: _Request) -> None:
        # gRPC calls back by client_timeout at the latest, HTTP's socket times out by then; the margin
        # covers an answer that never comes
        left = request.sent + self.timeout + 5.0 - time.monotonic()
        if not request.done.wait(max(left, 0.0)):
            request.error = TimeoutError(f"no answer within {self.timeout:g} s")

    def infer_frames(self, frames: Sequence[np.ndarray], *, rgb: bool = False) -> list[np.ndarray]:
        return self.collect(self.submit_frames(frames, rgb=rgb))

    def describe(self) -> str:
        return getattr(self, "_describe", f"triton ({self.address.uri})")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        log.debug("%s: %d requests, up to %d in flight at once", self.address.uri, self.requests,
                  self.peak_in_flight)
        workers = getattr(self, "_workers", None)
        if workers is not None:
            workers.shutdown(wait=True)  # requests under way end by their timeout
            for client in self._http_clients:
                client.close()
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()


def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), str(text).strip())
