"""The ``u2edge`` ROS 2 node: sensor_msgs/Image on ``image`` in, a mono8 ``mask`` out with the
input's header; ``overlay`` (bgr8), ``cutout`` (bgra8) and ``background`` (bgr8) on request; stats
on ``/diagnostics`` once a second.

The newest frame is always the one processed: the subscription puts each message in a one-frame
slot, and a worker thread takes from it, so a frame that arrives while another is in inference
replaces the waiting one and is counted as dropped. Latency stays bounded by one frame.

Only ``run`` imports rclpy. The frame work (``Settings``, ``Processor``, ``NodeStats``) needs none,
so it is tested without ROS.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import MissingDependencyError, U2EdgeError
from ..images import read_image
from ..precision import RUNTIME_PRECISIONS
from ..render import Background, Mode, parse_color, render
from ..video.pipeline import END, NewestSlot  # the pipeline's newest-frame slot: one owner for the drop policy
from ..video.smooth import MaskSmoother
from ..weights import WEIGHTS
from .convert import image_fields, to_bgr

__all__ = ["NODE_NAME", "PARAMETERS", "OUTPUTS", "QOS", "Settings", "ParameterError", "Processor", "NodeStats",
           "run"]

log = logging.getLogger("u2edge")

NODE_NAME = "u2edge"
OUTPUTS = {"mask": Mode.MASK, "overlay": Mode.OVERLAY, "cutout": Mode.CUTOUT, "background": Mode.BACKGROUND}
QOS = ("sensor_data", "reliable")
_PRECISIONS = tuple(p.value for p in RUNTIME_PRECISIONS)

# name -> (default, description): the node's parameters, declared in this order
PARAMETERS = {
    "model": ("u2netp", f"official model by name ({', '.join(sorted(WEIGHTS))}), used when engine is empty"),
    "engine": ("", "a model file instead: .engine/.plan (TensorRT), .onnx, .pth/.pt; empty: the official model"),
    "precision": ("auto", f"{', '.join(_PRECISIONS)}: as u2edge image --precision"),
    "outputs": (["mask"], f"topics published: {', '.join(OUTPUTS)}"),
    "qos": ("sensor_data", "sensor_data (best effort, depth 5) or reliable (depth 5): the subscription and the "
                           "image publishers"),
    "max_rate": (0.0, "most frames inferred per second (Hz); 0: as many as the engine keeps up with"),
    "bg_color": ("", "the background output's color, '#RRGGBB' or 'R,G,B'"),
    "bg_image": ("", "the background output's image file, resized to each frame"),
    "bg_blur": (0, "the background output: the frame's own background blurred with this kernel size"),
    "smooth": (0.0, "temporal mask smoothing, 0 (off) to below 1; 0.6 steadies most flicker on a static camera"),
}


class ParameterError(U2EdgeError):
    """A node parameter has a value the node cannot take."""


def _text(name: str, value) -> str:
    if value is None:  # YAML reads -p bg_color:=#00ff00 as a comment: no value
        raise ParameterError(f"parameter {name} has no value (quote a value that starts with #: "
                             f"-p \"{name}:='#00ff00'\")")
    if not isinstance(value, str):
        raise ParameterError(f"parameter {name} must be a string, got {value!r}")
    return value.strip()


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParameterError(f"parameter {name} must be a number, got {value!r}")
    return float(value)


def _choice(name: str, value, choices) -> str:
    text = _text(name, value)
    if text not in choices:
        raise ParameterError(f"parameter {name} {text!r} is not one of {', '.join(choices)}")
    return text


def _outputs(value) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise ParameterError(f"parameter outputs must be a list of names such as [mask,overlay], got {value!r}")
    names = [v.strip() for v in items if v.strip()]
    unknown = [v for v in names if v not in OUTPUTS]
    if unknown:
        raise ParameterError(f"parameter outputs: {', '.join(map(repr, unknown))} is not an output; choose from "
                             f"{', '.join(OUTPUTS)}")
    if not names:
        raise ParameterError(f"parameter outputs is empty; give one or more of {', '.join(OUTPUTS)}")
    return tuple(dict.fromkeys(names))  # in order, once each


@dataclass(frozen=True)
class Settings:
    """The node's parameters, checked. ``Settings.parse(values)`` raises ``ParameterError``."""

    model: str = PARAMETERS["model"][0]
    engine: str = PARAMETERS["engine"][0]
    precision: str = PARAMETERS["precision"][0]
    outputs: tuple = tuple(PARAMETERS["outputs"][0])
    qos: str = PARAMETERS["qos"][0]
    max_rate: float = PARAMETERS["max_rate"][0]
    bg_color: str = PARAMETERS["bg_color"][0]
    bg_image: str = PARAMETERS["bg_image"][0]
    bg_blur: int = PARAMETERS["bg_blur"][0]
    smooth: float = PARAMETERS["smooth"][0]

    @classmethod
    def parse(cls, values: dict) -> "Settings":
        """Settings from parameter values by name (missing ones take their defaults)."""
        values = {**{k: default for k, (default, _) in PARAMETERS.items()}, **values}
        max_rate, smooth, blur = (_number(k, values[k]) for k in ("max_rate", "smooth", "bg_blur"))
        if max_rate < 0:
            raise ParameterError(f"parameter max_rate {max_rate:g} must be 0 (unlimited) or a rate in Hz")
        if not 0 <= smooth < 1:
            raise ParameterError(f"parameter smooth {smooth:g} must be at least 0 (off) and below 1, such as 0.6")
        if blur < 0 or blur != int(blur):
            raise ParameterError(f"parameter bg_blur {blur:g} must be 0 (off) or a positive kernel size, such as 31")
        settings = cls(model=_choice("model", values["model"], sorted(WEIGHTS)),
                       engine=_text("engine", values["engine"]),
                       precision=_choice("precision", values["precision"], _PRECISIONS),
                       outputs=_outputs(values["outputs"]), qos=_choice("qos", values["qos"], QOS),
                       max_rate=max_rate, bg_color=_text("bg_color", values["bg_color"]),
                       bg_image=_text("bg_image", values["bg_image"]), bg_blur=int(blur), smooth=smooth)
        chosen = [k for k in ("bg_color", "bg_image", "bg_blur") if getattr(settings, k)]
        if len(chosen) > 1:
            raise ParameterError(f"parameters {' and '.join(chosen)} are both set; the background is one of bg_color, "
                                 "bg_image or bg_blur: clear the others ('' or 0)")
        if "background" in settings.outputs and not chosen:
            raise ParameterError("output background needs a background: set bg_color, bg_image or bg_blur")
        if settings.bg_color:
            settings.background()  # a bad color is refused now, not at the first frame
        return settings

    @property
    def engine_key(self) -> tuple:
        """What the engine depends on: a change reopens it."""
        return (self.engine, "" if self.engine else self.model, self.precision)

    def open_engine(self):
        from ..engine import U2EdgeEngine

        if self.engine:
            return U2EdgeEngine(self.engine, precision=self.precision)
        return U2EdgeEngine(model=self.model, precision=self.precision)

    def background(self) -> Background | None:
        """The background output's background; the bg_image file is read here."""
        try:
            if self.bg_color:
                return Background(color=parse_color(self.bg_color))
            if self.bg_image:
                return Background(image=read_image(self.bg_image))
        except U2EdgeError as exc:
            raise ParameterError(f"parameter {'bg_color' if self.bg_color else 'bg_image'}: {exc}") from None
        return Background(blur=self.bg_blur) if self.bg_blur else None


class NodeStats:
    """Counters since the start, and ``window()``: rates and latencies since the previous window.
    ``dropped`` is counted by the frame slot, in the thread that offers frames."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = self.processed = self.dropped = self.skipped = self.failed = 0
        self.last_problem = ""
        self._latencies: list[float] = []
        self._since = time.perf_counter()
        self._previous = (0, 0, 0, 0, 0)

    def done(self, latency: float) -> None:
        with self._lock:
            self.processed += 1
            self._latencies.append(latency)

    def skip(self, problem: str) -> None:
        """A frame the node cannot take (an encoding, a size)."""
        with self._lock:
            self.skipped += 1
            self.last_problem = problem

    def fail(self, problem: str) -> None:
        """A frame that failed on a bug."""
        with self._lock:
            self.failed += 1
            self.last_problem = problem

    def window(self) -> dict:
        """FPS (processed), input FPS (received), latency percentiles in ms (receipt to published),
        and frames dropped, skipped and failed, over the time since the last call; totals since the start."""
        now = time.perf_counter()
        with self._lock:
            latencies, self._latencies = sorted(self._latencies), []
            totals = (self.received, self.processed, self.dropped, self.skipped, self.failed)
            problem = self.last_problem
        seconds, self._since = max(now - self._since, 1e-9), now
        received, processed, dropped, skipped, failed = (t - p for t, p in zip(totals, self._previous))
        self._previous = totals
        pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3, 1)  # noqa: E731
        return {"seconds": round(seconds, 3), "fps": round(processed / seconds, 2),
                "input_fps": round(received / seconds, 2),
                "latency_ms": {"p50": pick(0.5), "p95": pick(0.95), "max": pick(1.0)} if latencies else None,
                "dropped": dropped, "skipped": skipped, "failed": failed,
                "problem": problem if skipped or failed else "",
                "totals": dict(zip(("received", "processed", "dropped", "skipped", "failed"), totals))}


# emit(output name, the input's header, the rendered image)
Emit = Callable[[str, object, np.ndarray], None]


class Processor:
    """The node's frame work, without ROS: ``offer(msg)`` from the subscription, a worker thread
    that infers the newest frame and calls ``emit`` for each output. ``lock`` is held while a frame
    is processed; hold it to change what ``emit`` publishes to."""

    def __init__(self, settings: Settings, emit: Emit) -> None:
        self.emit = emit
        self.stats = NodeStats()
        self.lock = threading.Lock()
        self.settings = settings
        self.background = settings.background()
        self.engine = settings.open_engine()
        log.info("engine: %s", self.engine.describe())
        self.smoother = MaskSmoother(settings.smooth) if settings.smooth else None
        self._slot = NewestSlot(self.stats)
        self._stop = threading.Event()
        self._reported: set[str] = set()
        self._worker = threading.Thread(target=self._work, name="u2edge-ros-worker", daemon=True)

    def start(self) -> None:
        self._worker.start()

    def offer(self, msg) -> None:
        """A new image message; it replaces one still waiting (counted in ``stats.dropped``)."""
        self.stats.received += 1
        self._slot.put((msg, time.perf_counter()))

    def reconfigure(self, settings: Settings) -> None:
        """Apply new settings between frames; the engine is reopened if its parameters changed. On
        a ``U2EdgeError`` (an engine or background image that cannot be opened) nothing changes."""
        background = settings.background()
        engine = settings.open_engine() if settings.engine_key != self.settings.engine_key else None
        with self.lock:
            old, self.settings, self.background = self.engine, settings, background
            if engine is not None:
                self.engine = engine
            if self.smoother is None or settings.smooth != self.smoother.strength:
                self.smoother = MaskSmoother(settings.smooth) if settings.smooth else None
        if engine is not None:
            old.close()
            log.info("engine: %s", engine.describe())

    def close(self) -> None:
        """Stop the worker (after the frame in inference) and close the engine."""
        self._stop.set()
        self._slot.put(END)
        if self._worker.is_alive():
            self._worker.join()
        self.engine.close()

    def _work(self) -> None:
        while not self._stop.is_set():
            item = self._slot.get()
            if item is END:
                return
            started = time.perf_counter()
            self._process(*item)
            rate = self.settings.max_rate
            if rate > 0 and self._stop.wait(max(0.0, started + 1.0 / rate - time.perf_counter())):
                return  # max_rate: the frames that arrive meanwhile replace each other; the newest is next

    def _process(self, msg, received: float) -> None:
        try:
            with self.lock:
                frame = to_bgr(msg)
                mask = self.engine(frame)
                if self.smoother is not None:
                    mask = self.smoother(frame, mask)
                for name in self.settings.outputs:
                    self.emit(name, msg.header, render(frame, mask, OUTPUTS[name], self.background))
        except U2EdgeError as exc:  # a frame the node cannot take (an encoding, a size): skip it, say so once
            self.stats.skip(str(exc))
            self._report(str(exc), "skipping frames: %s")
        except Exception as exc:  # a bug: its traceback once, then counted; the node goes on with the next frame
            problem = f"{type(exc).__name__}: {exc}"
            self.stats.fail(problem)
            self._report(problem, "a frame failed (a bug in u2edge, please report it): %s", exc_info=True)
        else:
            self.stats.done(time.perf_counter() - received)

    def _report(self, problem: str, template: str, **kwargs) -> None:
        if problem not in self._reported:
            if len(self._reported) > 100:  # a stream of distinct problems is not kept forever
                self._reported.clear()
            self._reported.add(problem)
            log.warning(template, problem, **kwargs)


# --- rclpy -----------------------------------------------------------------------------------------

def _ros():
    """rclpy and the message types, or one line that says how to install them."""
    try:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image
    except ImportError as exc:
        raise MissingDependencyError(
            f"u2edge ros needs ROS 2 (rclpy, sensor_msgs, diagnostic_msgs), which cannot be imported ({exc}); on "
            "x86-64 Linux with Python 3.10 to 3.12: pip install 'u2edge[ros]'; on Jetson or with ROS installed: "
            "source /opt/ros/<distro>/setup.bash and run u2edge from that ROS's Python") from exc
    return rclpy, Image, DiagnosticArray


def _qos_profile(name: str):
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    if name == "sensor_data":
        return qos_profile_sensor_data
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)


class _Node:
    """The rclpy side: parameters, the subscription, publishers and the diagnostics timer."""

    def __init__(self, rclpy, Image, DiagnosticArray) -> None:
        from rcl_interfaces.msg import ParameterDescriptor

        self.Image, self.DiagnosticArray = Image, DiagnosticArray
        self.node = rclpy.create_node(NODE_NAME)
        for name, (default, description) in PARAMETERS.items():
            # dynamic typing: -p max_rate:=10 (an integer) is as good as 10.0; the node checks the values
            self.node.declare_parameter(name, default, ParameterDescriptor(description=description,
                                                                           dynamic_typing=True))
        self.values = {name: self.node.get_parameter(name).value for name in PARAMETERS}
        settings = Settings.parse(self.values)
        self.subscription = None
        self.publishers: dict = {}
        self.processor = Processor(settings, self._emit)
        try:
            self._wire(settings, None)
            self.diagnostics = self.node.create_publisher(DiagnosticArray, "/diagnostics", 10)
            self.timer = self.node.create_timer(1.0, self._report)
            self.node.add_on_set_parameters_callback(self._on_set)
            self.processor.start()
        except BaseException:
            self.processor.close()
            raise
        log.info("%s: %s on %s -> %s (qos %s)", self.node.get_fully_qualified_name(), settings.precision,
                 self.subscription.topic_name, ", ".join(p.topic_name for p in self.publishers.values()), settings.qos)

    def _wire(self, settings: Settings, previous: Settings | None) -> None:
        """The subscription and the output publishers that ``settings`` ask for."""
        profile = _qos_profile(settings.qos)
        renew = previous is None or previous.qos != settings.qos
        if renew:
            if self.subscription is not None:
                self.node.destroy_subscription(self.subscription)
            self.subscription = self.node.create_subscription(self.Image, "image", self.processor.offer, profile)
        with self.processor.lock:  # not while the worker publishes
            kept = {} if renew else self.publishers
            publishers = {name: kept[name] if name in kept else self.node.create_publisher(self.Image, name, profile)
                          for name in settings.outputs}
            for name, publisher in self.publishers.items():
                if publishers.get(name) is not publisher:
                    self.node.destroy_publisher(publisher)
            self.publishers = publishers

    def _emit(self, name: str, header, image: np.ndarray) -> None:
        publisher = self.publishers.get(name)
        if publisher is None:  # an output added a moment ago; its publisher comes with the next frame
            return
        fields = image_fields(image)
        data = fields.pop("data")
        msg = self.Image(header=header, **fields)
        msg.data = data  # the array as it is: the constructor would copy it
        publisher.publish(msg)

    def _on_set(self, parameters):
        from rcl_interfaces.msg import SetParametersResult

        changed = {p.name: p.value for p in parameters if p.name in PARAMETERS}
        if not changed:
            return SetParametersResult(successful=True)
        values = {**self.values, **changed}
        previous = self.processor.settings
        try:
            settings = Settings.parse(values)
            self.processor.reconfigure(settings)
        except U2EdgeError as exc:
            log.warning("parameter change refused: %s", exc)
            return SetParametersResult(successful=False, reason=str(exc))
        self.values = values
        self._wire(settings, previous)
        log.info("parameters: %s", ", ".join(f"{k}={v!r}" for k, v in changed.items()))
        return SetParametersResult(successful=True)

    def _report(self) -> None:
        from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

        window = self.processor.stats.window()
        settings = self.processor.settings
        latency = window["latency_ms"]
        if window["failed"]:
            level, message = DiagnosticStatus.ERROR, f"frames failed: {window['problem']}"
        elif window["skipped"]:
            level, message = DiagnosticStatus.WARN, f"frames skipped: {window['problem']}"
        elif latency is None:
            level, message = DiagnosticStatus.OK, f"no frames in the last second on {self.subscription.topic_name}"
        else:
            level, message = DiagnosticStatus.OK, (f"{window['fps']:.1f} FPS, latency p50 {latency['p50']:.0f} ms, "
                                                   f"{window['dropped']} dropped")
        values = {"fps": window["fps"], "input fps": window["input_fps"],
                  "latency p50 ms": latency and latency["p50"], "latency p95 ms": latency and latency["p95"],
                  "latency max ms": latency and latency["max"], "dropped": window["dropped"],
                  "skipped": window["skipped"], "failed": window["failed"],
                  **{f"total {k}": v for k, v in window["totals"].items()},
                  "engine": self.processor.engine.describe(), "outputs": ",".join(settings.outputs),
                  "qos": settings.qos}
        status = DiagnosticStatus(level=level, name=f"{self.node.get_name()}: masks", message=message,
                                  hardware_id="", values=[KeyValue(key=k, value="" if v is None else str(v))
                                                          for k, v in values.items()])
        report = self.DiagnosticArray(status=[status])
        report.header.stamp = self.node.get_clock().now().to_msg()
        self.diagnostics.publish(report)

    def close(self) -> None:
        self.processor.close()
        self.node.destroy_node()


def run(ros_args: list[str]) -> int:
    """Run the node until Ctrl-C or SIGTERM (raised here as KeyboardInterrupt by the CLI's handler).
    ``ros_args`` are what follows ``--ros-args``: remappings (-r), parameters (-p), --log-level."""
    rclpy, Image, DiagnosticArray = _ros()
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    try:
        from rclpy.signals import SignalHandlerOptions

        options = {"signal_handler_options": SignalHandlerOptions.NO}  # Python's handlers stop the node cleanly
    except ImportError:  # before Humble
        options = {}
    try:
        rclpy.init(args=[NODE_NAME, "--ros-args", *ros_args] if ros_args else [NODE_NAME], **options)
    except Exception as exc:  # rcl's parser: a malformed remapping or parameter
        reason = str(exc).split(", at /")[0]  # rcl appends its source locations
        raise U2EdgeError(lambda spell: f"{spell('ros_args')} {' '.join(ros_args)}: {reason}; ROS takes "
                                        "-r FROM:=TO and -p NAME:=VALUE") from None
    try:
        node = _Node(rclpy, Image, DiagnosticArray)
        try:
            executor = SingleThreadedExecutor()
            executor.add_node(node.node)
            while rclpy.ok():
                executor.spin_once(timeout_sec=0.2)  # returns often, so Ctrl-C and SIGTERM are seen at once
        except ExternalShutdownException:
            pass
        finally:
            node.close()
    finally:
        rclpy.try_shutdown()
    return 0
