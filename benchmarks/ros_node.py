"""The ``u2edge ros`` node under load: its FPS, the latency from a frame's stamp to its mask, and drops.

    python benchmarks/ros_node.py [--frames 150] [--precision auto] [--transports default,shm]
                                  [--json-out ros_node.json]

Runs itself inside a private network namespace that holds only loopback (``unshare -n``, as root),
with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``: DDS reaches nothing outside. A client node
publishes real photos (scikit-image's, resized to 640x480) as bgr8 on ``image`` with the node's
default QoS (sensor data: best effort), and takes the masks. For each Fast DDS configuration
(``--transports``: its defaults, and a 32 MB shared-memory segment), one node and two rows:
- camera 30 FPS: a camera's pace, faster than a CPU infers;
- full speed: the frames back to back, as fast as the client can publish them.
Latency is the publisher's stamp (``time.time()`` when published) to the mask received, on one
clock. The node's counts (received, processed, dropped) come from its /diagnostics; frames
published but not received were lost in transport or overwritten in the subscription's queue
(best effort, depth 5) before the node took them. FPS is masks received over
the time from the first frame published to the last mask. The client shares the CPU with the
node. Five masks, one frame at a time, warm the node up first. For reference, the engine alone
runs the same frames one after another in this process, without ROS.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from u2edge import read_image
from u2edge.bench.run import machine, skimage_photos

SIZE = (640, 480)
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
INSIDE = "U2EDGE_BENCH_PRIVATE_NETWORK"
DEADLINE = 30.0  # seconds for any one event
TRANSPORTS = {"default": "Fast DDS defaults", "shm": "Fast DDS, 32 MB shared memory"}
# Fast DDS's shared-memory segment is 512 KB by default: a larger best-effort sample (640x480 bgr8 is
# 900 KB) goes over UDP in fragments, and most are lost. The publisher's segment is what counts.
FASTDDS_LARGE_SHM = """<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <transport_descriptors>
      <transport_descriptor>
        <transport_id>large_shm</transport_id>
        <type>SHM</type>
        <segment_size>33554432</segment_size>
      </transport_descriptor>
      <transport_descriptor>
        <transport_id>udp</transport_id>
        <type>UDPv4</type>
      </transport_descriptor>
    </transport_descriptors>
    <participant profile_name="large_images" is_default_profile="true">
      <rtps>
        <userTransports>
          <transport_id>large_shm</transport_id>
          <transport_id>udp</transport_id>
        </userTransports>
        <useBuiltinTransports>false</useBuiltinTransports>
      </rtps>
    </participant>
  </profiles>
</dds>
"""


def in_private_network(argv: list[str]) -> int:
    """Run this script again inside a new network namespace with loopback alone."""
    cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "u2edge-netns", sys.executable,
           os.path.abspath(__file__), *argv]
    env = {**os.environ, INSIDE: "1", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    return subprocess.run(cmd, env=env).returncode


def only_loopback() -> bool:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.splitlines()
    return [line.split(":")[1].strip() for line in links] == ["lo"]


class Client:
    def __init__(self, rclpy, process: subprocess.Popen) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        self.process = process
        self.node = rclpy.create_node("u2edge_bench_client")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.masks: dict[str, tuple[float, float]] = {}  # frame_id -> (stamp, received), both time.time()
        self.diagnostics: list[dict] = []
        self.images = self.node.create_publisher(Image, "image", qos_profile_sensor_data)
        self.mask_sub = self.node.create_subscription(Image, "mask", self._on_mask, qos_profile_sensor_data)
        self.diag_sub = self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_mask(self, msg) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.masks[msg.header.frame_id] = (stamp, time.time())

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name == "u2edge: masks":
                self.diagnostics.append({kv.key: kv.value for kv in status.values})

    def spin_until(self, what: str, ready, deadline: float = DEADLINE) -> bool:
        end = time.monotonic() + deadline
        while not ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"the node exited with code {self.process.returncode} while waiting for {what}")
            if time.monotonic() > end:
                return False
            self.executor.spin_once(timeout_sec=0.05)
        return True

    def publish(self, msg, frame_id: str) -> None:
        now = time.time()
        msg.header.frame_id = frame_id
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int((now % 1) * 1e9)
        self.images.publish(msg)

    def totals(self) -> dict:
        """The node's totals from its next /diagnostics message."""
        seen = len(self.diagnostics)
        if not self.spin_until("diagnostics", lambda: len(self.diagnostics) > seen):
            raise RuntimeError("no /diagnostics from the node")
        last = self.diagnostics[-1]
        return {k: int(last[f"total {k}"]) for k in ("received", "processed", "dropped", "skipped", "failed")}


def messages(frames: list[np.ndarray]) -> list:
    from sensor_msgs.msg import Image

    from u2edge.ros.convert import image_fields

    out = []
    for frame in frames:
        fields = image_fields(frame)
        data = fields.pop("data")
        msg = Image(**fields)
        msg.data = data
        out.append(msg)
    return out


def run_row(client: Client, msgs: list, name: str, frames: int, rate: float) -> dict:
    before = client.totals()
    ids = [f"{name}-{i}" for i in range(frames)]
    period = 1.0 / rate if rate else 0.0
    start = next_time = time.monotonic()
    started = time.time()
    for i, frame_id in enumerate(ids):
        client.publish(msgs[i % len(msgs)], frame_id)
        next_time += period
        while True:  # take the masks that arrived; at a camera's pace, until the next frame is due
            client.executor.spin_once(timeout_sec=max(0.0, next_time - time.monotonic()))
            if time.monotonic() >= next_time:
                break
    published = time.monotonic() - start
    client.spin_until("the last frame's mask", lambda: ids[-1] in client.masks, deadline=10.0)
    after = client.totals()
    node = {k: after[k] - before[k] for k in after}
    got = [client.masks[i] for i in ids if i in client.masks]
    latencies = sorted(received - stamp for stamp, received in got)
    last = max(received for _, received in got) if got else started
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3, 1)  # noqa: E731
    return {"name": name, "rate": rate, "published": frames, "publish_seconds": round(published, 3),
            "node": node, "not_received": frames - node["received"], "masks": len(got),
            "fps": round(len(got) / (last - started), 2) if got and last > started else None,
            "latency_ms": {"p50": pick(0.5), "p95": pick(0.95), "max": pick(1.0)} if got else None}


def warm_up(client: Client, msgs: list, frames: int = 5) -> None:
    """One frame at a time until ``frames`` masks came back (a best-effort frame may be lost: send again)."""
    done = 0
    for i in range(200):
        client.publish(msgs[i % len(msgs)], f"warmup-{i}")
        if client.spin_until("a warm-up mask", lambda i=i: f"warmup-{i}" in client.masks, deadline=2.0):
            done += 1
            if done == frames:
                return
    raise RuntimeError("the node returned no masks while warming up")


def engine_alone(precision: str, frames: int = 30) -> dict:
    """``engine(frame)`` on the same 640x480 frames, no ROS: what the node's FPS compares with."""
    from u2edge import U2EdgeEngine

    photos = [cv2.resize(read_image(p), SIZE, interpolation=cv2.INTER_AREA) for p in skimage_photos(PHOTOS)]
    with U2EdgeEngine(precision=precision) as engine:
        for frame in photos:  # warm-up
            engine(frame)
        start = time.perf_counter()
        for i in range(frames):
            engine(photos[i % len(photos)])
        seconds = (time.perf_counter() - start) / frames
    return {"fps": round(1 / seconds, 2), "ms": round(seconds * 1e3, 1)}


def bench(frames: int, precision: str, transport: str) -> dict:
    """One node, one transport configuration: its rows (run inside the private network)."""
    import rclpy

    photos = [cv2.resize(read_image(p), SIZE, interpolation=cv2.INTER_AREA) for p in skimage_photos(PHOTOS)]
    with tempfile.TemporaryDirectory(prefix="u2edge-ros-") as tmp:
        if transport == "shm":  # before rclpy starts: Fast DDS reads its profile once per process
            profile = Path(tmp) / "fastdds.xml"
            profile.write_text(FASTDDS_LARGE_SHM)
            os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
        log_path = Path(tmp) / "node.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen([sys.executable, "-m", "u2edge", "ros", "--ros-args",
                                        "-p", f"precision:={precision}"], stdout=log, stderr=subprocess.STDOUT)
        rclpy.init()
        try:
            client = Client(rclpy, process)
            if not client.spin_until("the node", lambda: client.images.get_subscription_count() > 0
                                     and client.mask_sub.get_publisher_count() > 0
                                     and client.diag_sub.get_publisher_count() > 0, deadline=300.0):
                raise RuntimeError(f"the node did not come up:\n{log_path.read_text()}")
            msgs = messages(photos)
            warm_up(client, msgs)
            rows = [run_row(client, msgs, f"{TRANSPORTS[transport]}, {name}", frames, rate)
                    for name, rate in (("camera 30 FPS", 30.0), ("full speed", 0.0))]
            engine = client.diagnostics[-1]["engine"]
            process.send_signal(signal.SIGINT)
            returncode = process.wait(timeout=DEADLINE)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            rclpy.try_shutdown()
        if returncode != 130:  # Ctrl-C: u2edge's exit code for an interrupted command
            raise RuntimeError(f"the node exited with {returncode}:\n{log_path.read_text()}")
        return {"engine": engine, "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150, help="frames published in each row (default: 150)")
    parser.add_argument("--precision", default="auto", help="the node's precision parameter (default: auto)")
    parser.add_argument("--transports", default="default,shm",
                        help="Fast DDS configurations, comma-separated: default (its built-in transports), shm "
                             "(a 32 MB shared-memory segment, FASTDDS_LARGE_SHM) (default: both)")
    parser.add_argument("--json-out", help="also write the results here")
    parser.add_argument("--result", help=argparse.SUPPRESS)  # inside the namespace: one transport's result
    args = parser.parse_args(argv)
    transports = args.transports.split(",")
    if os.environ.get(INSIDE) == "1":
        if not only_loopback():
            print("refusing to run: this network namespace has interfaces other than loopback", file=sys.stderr)
            return 1
        Path(args.result).write_text(json.dumps(bench(args.frames, args.precision, transports[0])))
        return 0
    alone = engine_alone(args.precision)
    results = []
    with tempfile.TemporaryDirectory(prefix="u2edge-ros-bench-") as tmp:
        for transport in transports:
            if transport not in TRANSPORTS:
                parser.error(f"--transports: {transport!r} is not one of {', '.join(TRANSPORTS)}")
            result = Path(tmp) / f"{transport}.json"
            rc = in_private_network(["--frames", str(args.frames), "--precision", args.precision,
                                     "--transports", transport, "--result", str(result)])
            if rc != 0:
                return rc
            results.append(json.loads(result.read_text()))
    rows = [row for result in results for row in result["rows"]]
    print(f"{args.frames} frames of {SIZE[0]}x{SIZE[1]} bgr8 per row, QoS sensor_data (best effort); "
          f"{results[0]['engine']}")
    print(f"the engine alone, one frame after another (no ROS): {alone['fps']:.2f} FPS, {alone['ms']:.0f} ms a frame")
    print(f"{'row':<46} {'FPS':>5} {'p50 ms':>7} {'p95 ms':>7}  {'published':>9} {'received':>8} {'processed':>9} "
          f"{'dropped':>7} {'not received':>12}")
    for row in rows:
        lat, node = row["latency_ms"] or {"p50": float("nan"), "p95": float("nan")}, row["node"]
        print(f"{row['name']:<46} {row['fps'] or float('nan'):5.2f} {lat['p50']:7.0f} {lat['p95']:7.0f}  "
              f"{row['published']:9d} {node['received']:8d} {node['processed']:9d} {node['dropped']:7d} "
              f"{row['not_received']:12d}")
    if args.json_out:
        out = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "frames": args.frames, "size": list(SIZE),
               "qos": "sensor_data", "engine": results[0]["engine"], "engine_alone": alone, "rows": rows}
        Path(args.json_out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
