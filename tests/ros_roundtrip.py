"""Drive a real ``u2edge ros`` node from a client node; run only inside a private network namespace.

    python tests/ros_roundtrip.py CASES.json OUTDIR

Starts the node as a subprocess (the official U2-NetP at FP32), then, waiting for each event with
a deadline (never a fixed sleep):
1. sets parameters through the SetParameters service: bad values (refused with a reason), then
   qos=reliable (the subscription and publishers are recreated), so nothing is dropped;
2. publishes a yuv422 frame, which the node skips, and waits for /diagnostics to count it;
   then publishes each case (a photo as bgr8, rgb8, rgba8 or mono8, rows padded by ``pad`` bytes) with
   its own stamp and frame_id, and waits for its mask;
3. sets outputs=[mask,overlay,cutout] and waits for all three for one more frame;
4. waits for /diagnostics to count every frame, then stops the node with SIGTERM.
Writes OUTDIR/results.npz (the images received, by FRAME_ID.TOPIC) and OUTDIR/results.json
(headers, parameter results, diagnostics, the node's exit code and log).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from u2edge.images import read_image
from u2edge.ros.convert import ENCODINGS, image_array

DEADLINE = 120.0  # seconds for any one event; generous for a loaded 2-core CI runner
RELIABLE = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
_FROM_BGR = {"rgb8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_BGR2RGBA, "bgra8": cv2.COLOR_BGR2BGRA}


def image_message(case: dict) -> Image:
    """A case's photo as an Image message, its rows padded with ``pad`` bytes of 0xAB."""
    encoding = case["encoding"]
    if encoding == "mono8":
        pixels = cv2.imread(case["path"], cv2.IMREAD_GRAYSCALE)
    else:
        pixels = read_image(case["path"])
        if encoding in _FROM_BGR:
            pixels = cv2.cvtColor(pixels, _FROM_BGR[encoding])
    height, width = pixels.shape[:2]
    row = width * ENCODINGS[encoding]
    padded = np.full((height, row + case["pad"]), 0xAB, np.uint8)
    padded[:, :row] = pixels.reshape(height, row)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=0, step=row + case["pad"])
    msg.data = padded.tobytes()
    msg.header.frame_id = case["frame_id"]
    msg.header.stamp = Time(sec=case["stamp"][0], nanosec=case["stamp"][1])
    return msg


class Client:
    def __init__(self, node: subprocess.Popen) -> None:
        self.process = node
        self.node = rclpy.create_node("u2edge_test_client")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.received: dict[tuple[str, str], Image] = {}  # (topic, frame_id) -> message
        self.subscriptions = {}
        self.diagnostics: list[dict] = []
        self.diagnostics_subscription = self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                                                      self._on_diagnostics, 10)
        self.parameters = self.node.create_client(SetParameters, "/u2edge/set_parameters")
        self.images = self.node.create_publisher(Image, "image", RELIABLE)

    def subscribe(self, topic: str) -> None:
        def on_image(msg: Image, topic=topic) -> None:
            self.received[(topic, msg.header.frame_id)] = msg

        self.subscriptions[topic] = self.node.create_subscription(Image, topic, on_image, RELIABLE)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == "u2edge: masks":
                self.diagnostics.append({"level": int.from_bytes(status.level, "little")
                                         if isinstance(status.level, bytes) else int(status.level),
                                         "message": status.message,
                                         "values": {kv.key: kv.value for kv in status.values}})

    def wait_for(self, what: str, ready) -> None:
        """Spin until ``ready()``: callbacks run as their messages arrive."""
        deadline = time.monotonic() + DEADLINE
        while not ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"the node exited with code {self.process.returncode} while waiting for {what}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {DEADLINE:.0f} s")
            self.executor.spin_once(timeout_sec=0.1)

    def set(self, **values) -> dict:
        request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                                    for k, v in values.items()])
        future = self.parameters.call_async(request)
        self.wait_for(f"answer to setting {values}", future.done)
        result = future.result().results[0]
        return {"values": values, "successful": result.successful, "reason": result.reason}

    def round_trip(self, case: dict, topics: tuple[str, ...]) -> None:
        self.images.publish(image_message(case))
        self.wait_for(f"{', '.join(topics)} for {case['frame_id']}",
                      lambda: all((t, case["frame_id"]) in self.received for t in topics))


def main(cases_json: str, outdir: str) -> int:
    cases = json.loads(Path(cases_json).read_text())
    out = Path(outdir)
    log_path = out / "node.log"
    with open(log_path, "w") as log:
        node = subprocess.Popen([sys.executable, "-m", "u2edge", "ros", "--ros-args", "-p", "precision:=fp32"],
                                stdout=log, stderr=subprocess.STDOUT)
    results: dict = {"parameters": [], "headers": {}}
    arrays: dict[str, np.ndarray] = {}
    rclpy.init()
    try:
        client = Client(node)
        client.wait_for("parameter service of /u2edge", client.parameters.service_is_ready)
        for values in ({"outputs": ["mask", "bogus"]}, {"qos": "fast"}, {"engine": "/nonexistent/model.onnx"},
                       {"qos": "reliable"}):
            results["parameters"].append(client.set(**values))
        client.subscribe("mask")
        client.wait_for("matched image subscription, mask and diagnostics publishers",
                        lambda: client.images.get_subscription_count() > 0
                        and client.subscriptions["mask"].get_publisher_count() > 0
                        and client.diagnostics_subscription.get_publisher_count() > 0)
        bad = image_message({**cases[0], "frame_id": "bad"})
        bad.encoding = "yuv422"  # a frame the node cannot take: skipped, counted, said once
        client.images.publish(bad)
        client.wait_for("diagnostics counting the skipped frame",
                        lambda: any(d["values"].get("total skipped") == "1" for d in client.diagnostics))
        for case in cases:
            client.round_trip(case, ("mask",))
        results["parameters"].append(client.set(outputs=["mask", "overlay", "cutout"]))
        for topic in ("overlay", "cutout"):
            client.subscribe(topic)
        client.wait_for("overlay and cutout publishers",
                        lambda: all(client.subscriptions[t].get_publisher_count() > 0 for t in ("overlay", "cutout")))
        extra = {**cases[0], "frame_id": "outputs", "stamp": [7, 7]}
        client.round_trip(extra, ("mask", "overlay", "cutout"))
        frames = len(cases) + 1
        client.wait_for("diagnostics counting every frame",
                        lambda: any(d["values"].get("total processed") == str(frames) for d in client.diagnostics))
        for (topic, frame_id), msg in client.received.items():
            arrays[f"{frame_id}.{topic}"] = np.array(image_array(msg))
            results["headers"][f"{frame_id}.{topic}"] = {
                "frame_id": msg.header.frame_id, "stamp": [msg.header.stamp.sec, msg.header.stamp.nanosec],
                "encoding": msg.encoding, "step": msg.step}
        results["diagnostics"] = client.diagnostics
        node.send_signal(signal.SIGTERM)
        results["returncode"] = node.wait(timeout=DEADLINE)
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
        rclpy.try_shutdown()
        results["log"] = log_path.read_text()
        np.savez(out / "results.npz", **arrays)
        (out / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    assert os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == "LOCALHOST", "run inside tests/netns.py's private_env()"
    sys.exit(main(*sys.argv[1:]))
