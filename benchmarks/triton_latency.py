"""Round-trip latency of one 640x480 frame through Triton against the in-process engine, in one run.

    python benchmarks/triton_latency.py [--model u2netp] [--precision auto] [--frames 40]
                                        [--json-out triton_latency.json]

Runs itself inside a private network namespace that holds only loopback (``unshare -n``, as root).
There it writes a ``--python-network`` repository of the same model and precision that the
in-process ``U2EdgeEngine`` runs (``u2edge triton repo``), serves it as ``u2edge triton serve`` does
(``TritonServer``: pytriton's tritonserver, or one on PATH), and times ``engine(frame)`` one frame at
a time, after a warm-up, for each row: the in-process engine, ``triton://`` (gRPC) and
``triton+http://``, taking turns frame by frame. The frames are scikit-image's photos resized to
640x480. Server and client share this machine's cores, so the difference between rows is Triton's
cost: the requests, the ensemble's three steps, and the Python backend's copies between processes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from u2edge import U2EdgeEngine, read_image
from u2edge.bench.run import machine, skimage_photos

SIZE = (640, 480)
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
INSIDE = "U2EDGE_BENCH_PRIVATE_NETWORK"
GRPC_PORT, HTTP_PORT = 8001, 8000  # the namespace is private: the ports are ours


def in_private_network(argv: list[str]) -> int:
    """Run this script again inside a new network namespace with loopback alone."""
    cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "u2edge-netns", sys.executable,
           os.path.abspath(__file__), *argv]
    return subprocess.run(cmd, env={**os.environ, INSIDE: "1"}).returncode


def only_loopback() -> bool:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.splitlines()
    return [line.split(":")[1].strip() for line in links] == ["lo"]


def summary(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1e3
    return {"p50": round(float(np.percentile(ms, 50)), 1), "p95": round(float(np.percentile(ms, 95)), 1),
            "mean": round(float(ms.mean()), 1), "min": round(float(ms.min()), 1)}


def bench(model: str, precision: str, count: int) -> dict:
    """The rows, run inside the private network. The engines take turns, frame by frame, so that
    whatever else runs on the machine weighs on every row alike."""
    from u2edge.triton.repo import RepoOptions, write_repo
    from u2edge.triton.server import TritonServer

    frames = [cv2.resize(read_image(p), SIZE, interpolation=cv2.INTER_AREA) for p in skimage_photos(PHOTOS)]
    names = ("in-process U2EdgeEngine", "Triton, gRPC (triton://)", "Triton, HTTP (triton+http://)")
    uris = (None, f"triton://127.0.0.1:{GRPC_PORT}/u2edge", f"triton+http://127.0.0.1:{HTTP_PORT}/u2edge")
    with tempfile.TemporaryDirectory(prefix="u2edge-triton-bench-") as tmp:
        repo = write_repo(RepoOptions(output=Path(tmp) / "repo", model=model, precision=precision,
                                      python_network=True))
        started = time.perf_counter()
        with TritonServer(repo.path, http_port=HTTP_PORT, grpc_port=GRPC_PORT) as server:
            startup = time.perf_counter() - started
            engines = [U2EdgeEngine(model=model, precision=precision) if uri is None else U2EdgeEngine(uri)
                       for uri in uris]
            try:
                masks = [[engine(frame) for frame in frames] for engine in engines]  # the warm-up, and masks
                seconds: list[list[float]] = [[] for _ in engines]
                for i in range(count):
                    for engine, times in zip(engines, seconds):
                        start = time.perf_counter()
                        engine(frames[i % len(frames)])
                        times.append(time.perf_counter() - start)
                rows = [{"name": name, "engine": engine.describe(), "ms": summary(times),
                         "max_diff": round(max(float(np.abs(a - b).max()) for a, b in zip(got, masks[0])), 6)}
                        for name, engine, times, got in zip(names, engines, seconds, masks)]
            finally:
                for engine in engines:
                    engine.close()
            served = {"models": server.models, "tritonserver": server.version, "startup_seconds": round(startup, 2),
                      "network": repo.network.about}
    return {"rows": rows, "server": served}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="u2netp", help="the official model (default: u2netp)")
    parser.add_argument("--precision", default="auto", help="auto (default), fp32, int8 or bf16")
    parser.add_argument("--frames", type=int, default=40, help="timed frames in each row (default: 40)")
    parser.add_argument("--json-out", help="also write the results here")
    parser.add_argument("--result", help=argparse.SUPPRESS)  # inside the namespace: where the rows go
    args = parser.parse_args(argv)
    if os.environ.get(INSIDE) == "1":
        if not only_loopback():
            print("refusing to run: this network namespace has interfaces other than loopback", file=sys.stderr)
            return 1
        Path(args.result).write_text(json.dumps(bench(args.model, args.precision, args.frames)))
        return 0
    with tempfile.TemporaryDirectory(prefix="u2edge-triton-latency-") as tmp:
        result_path = Path(tmp) / "result.json"
        rc = in_private_network(["--model", args.model, "--precision", args.precision, "--frames", str(args.frames),
                                 "--result", str(result_path)])
        if rc != 0:
            return rc
        result = json.loads(result_path.read_text())
    host = machine()
    rows, served = result["rows"], result["server"]
    local = rows[0]["ms"]["p50"]
    print(f"one {SIZE[0]}x{SIZE[1]} frame at a time, {args.frames} frames a row; {host['cpu']} ({host['cores']} cores)")
    print(f"network: {served['network']}; tritonserver {served['tritonserver']} (started in "
          f"{served['startup_seconds']} s), models {', '.join(served['models'])}")
    print(f"{'row':<32} {'p50 ms':>7} {'p95 ms':>7} {'mean ms':>8} {'+ms p50':>8} {'max |diff|':>10}")
    for row in rows:
        ms = row["ms"]
        print(f"{row['name']:<32} {ms['p50']:7.1f} {ms['p95']:7.1f} {ms['mean']:8.1f} {ms['p50'] - local:8.1f} "
              f"{row['max_diff']:10.6f}")
    if args.json_out:
        out = {"date": time.strftime("%Y-%m-%d"), "machine": host, "model": args.model, "precision": args.precision,
               "frames": args.frames, "size": list(SIZE), **result}
        Path(args.json_out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
