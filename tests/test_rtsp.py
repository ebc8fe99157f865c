"""RTSP end to end: ``u2edge camera rtsp://...`` against a real RTSP server (tests/rtsp_server.py:
GstRtspServer, H.264 in several slices a frame, run by the system's python3) serving frames made from
real photos, inside a private network namespace (tests/netns.py). A stream that plays, a server lost
mid-stream, and a server that comes back; each output frame is held to the mask of the photo served."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import decoded
from netns import private_env, private_network, require_private_network
from u2edge.images import read_image, write_image

HERE = Path(__file__).parent
SCENARIO = HERE / "rtsp_scenario.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-gi and gir1.2-gst-rtsp-server-1.0
URI = "rtsp://127.0.0.1:8554/cam"  # the namespace is private: the port is ours
SIZE = (320, 240)
FPS = 10
# the server is lost this many frames in: OpenCV's FFmpeg reads about the first 28 (at 10 FPS) while it
# opens the stream and, with fflags nobuffer, discards them, so this leaves the client frames to read
LOSE_AFTER = 50
# H.264 in and mp4 out cost the masks little (measured: MAE 0.004 to 0.008, IoU 0.99+ to the served
# photo's mask; the other photos' masks are at MAE 0.29+, IoU 0.56 at best)
MAX_MAE, MIN_IOU = 0.03, 0.95

pytestmark = pytest.mark.slow

_PROBE = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ("appsrc", "pngdec", "videoconvert", "identity", "x264enc", "rtph264pay")
           if Gst.ElementFactory.find(e) is None]
assert not missing, f"missing GStreamer elements: {', '.join(missing)}"
"""


@pytest.fixture(scope="module")
def rtsp_server_ready():
    """Skip, saying why, unless an RTSP server can run here: a private network namespace, and the
    system's python3 with GstRtspServer and the elements the server uses."""
    require_private_network()
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"no RTSP server here: no {SYSTEM_PYTHON} (Debian's, with python3-gi)")
    probe = subprocess.run([SYSTEM_PYTHON, "-c", _PROBE], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip("no RTSP server here: apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
                    f"gstreamer1.0-plugins-{{base,good,bad,ugly}} ({probe.stderr.strip().splitlines()[-1]})")


@pytest.fixture(scope="module")
def served(rtsp_server_ready, photos, engine, tmp_path_factory):
    """Frames made from real photos, as the server reads them (PNG files), with their masks from
    u2edge's reference engine, by photo name."""
    folder = tmp_path_factory.mktemp("rtsp_frames")
    frames = {}
    for name in ("astronaut.png", "rocket.jpg", "chelsea.png"):
        path = folder / f"{Path(name).stem}.png"
        write_image(path, cv2.resize(photos[name], SIZE, interpolation=cv2.INTER_AREA))
        frames[name] = (path, engine(read_image(path)))
    return frames


def scenario(tmp_path: Path, servers: list[dict], client: list) -> dict:
    """Run tests/rtsp_scenario.py in a private network namespace; its record of every process."""
    spec, record = tmp_path / "spec.json", tmp_path / "record.json"
    spec.write_text(json.dumps({"servers": servers, "client": list(map(str, client)), "deadline": 240,
                                "server_python": SYSTEM_PYTHON}))
    proc = subprocess.run(private_network([sys.executable, SCENARIO, spec, record]), env=private_env(),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"the scenario driver failed:\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(record.read_text())
    assert result["failure"] is None, f"{result['failure']}:\n{json.dumps(result, indent=1)}"
    return result


def server(frame: Path, *options, after: str | None = None) -> dict:
    return {"args": [str(frame), "--mount", "cam", "--fps", str(FPS), "--loop", *map(str, options)], "after": after}


def agreement(frame: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(MAE, IoU at 0.5) of a mask video's frame against a float mask."""
    got = frame.mean(axis=2) / 255.0
    inter, union = np.logical_and(got > 0.5, mask > 0.5).sum(), np.logical_or(got > 0.5, mask > 0.5).sum()
    return float(np.abs(got - mask).mean()), float(inter / max(union, 1))


def closest(frame: np.ndarray, served: dict) -> tuple[str, float, float]:
    """The photo whose mask the frame is closest to, with the MAE and IoU to it."""
    scores = {name: agreement(frame, mask) for name, (_, mask) in served.items()}
    name = min(scores, key=lambda n: scores[n][0])
    return (name, *scores[name])


def client_lines(result: dict) -> tuple[dict, list[str]]:
    """The client's --json summary and its stderr lines."""
    client = result["client"]
    return json.loads("\n".join(client["stdout"])), client["stderr"]


def test_a_stream_plays(served, tmp_path):
    frame, _ = served["astronaut.png"]
    out = tmp_path / "out.mp4"
    result = scenario(tmp_path, [server(frame)],
                      ["camera", URI, out, "--headless", "--precision", "fp32", "--max-frames", 20, "--json"])
    assert result["client"]["returncode"] == 0, result["client"]["stderr"]
    summary, _ = client_lines(result)
    assert summary["source"] == URI and summary["stop"] == "max frames" and summary["error"] is None
    assert summary["frames"]["written"] == 20
    frames = decoded(out)
    assert len(frames) == 20 and frames[0].shape == (SIZE[1], SIZE[0], 3)
    for index, image in enumerate(frames):
        name, mae, iou = closest(image, served)
        assert (name, mae < MAX_MAE, iou > MIN_IOU) == ("astronaut.png", True, True), \
            f"frame {index}: closest to {name} (MAE {mae:.3f}, IoU {iou:.3f})"
    # the bound tells photos apart: the frames are far from another photo's mask
    assert agreement(frames[0], served["chelsea.png"][1])[0] > 5 * MAX_MAE


def test_a_server_lost_mid_stream_stops_cleanly(served, tmp_path):
    frame, _ = served["astronaut.png"]
    out = tmp_path / "out.mp4"
    result = scenario(tmp_path, [server(frame, "--lose-after", LOSE_AFTER)],
                      ["camera", URI, out, "--headless", "--precision", "fp32", "--retries", 2, "--json"])
    assert result["servers"][0]["stdout"][-1] == f"lost after {LOSE_AFTER} frames"
    assert result["client"]["returncode"] == 1
    summary, stderr = client_lines(result)
    errors = [line for line in stderr if line.startswith("u2edge: error")]
    assert len(errors) == 1 and URI in errors[0] and "gave up after 2 retries" in errors[0], stderr
    assert errors[0].startswith(f"u2edge: error: cannot open stream {URI}"), errors[0]  # why, not "is closed"
    assert [n for n in (1, 2) if any(f"retry {n} of 2 in" in line for line in stderr)] == [1, 2], stderr
    assert summary["stop"] == "source failed" and summary["retries"] == 2
    frames = decoded(out)  # finalized: complete and playable, with what came before the loss
    assert len(frames) >= 1 and len(frames) == summary["frames"]["written"]
    for index, image in enumerate(frames):
        name, mae, iou = closest(image, served)
        assert (name, mae < MAX_MAE, iou > MIN_IOU) == ("astronaut.png", True, True), \
            f"frame {index}: closest to {name} (MAE {mae:.3f}, IoU {iou:.3f})"
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".mp4" or p.name.startswith(".")] == ["out.mp4"]


def test_a_server_that_comes_back(served, tmp_path):
    first, _ = served["astronaut.png"]
    second, _ = served["rocket.jpg"]
    out = tmp_path / "out.mp4"
    max_frames = LOSE_AFTER + 5  # more than the first server sends: some frames must come from the second
    result = scenario(tmp_path, [server(first, "--lose-after", LOSE_AFTER),
                                 server(second, after="retry 1 of")],  # started once the client lost the first
                      ["camera", URI, out, "--headless", "--precision", "fp32", "--retries", 8,
                       "--max-frames", max_frames, "--json"])
    assert result["servers"][0]["stdout"][-1] == f"lost after {LOSE_AFTER} frames"
    assert result["client"]["returncode"] == 0, result["client"]["stderr"]
    summary, _ = client_lines(result)
    assert summary["stop"] == "max frames" and summary["error"] is None and summary["retries"] >= 1
    assert summary["frames"]["written"] == max_frames
    frames = decoded(out)
    assert len(frames) == max_frames
    names = []
    for index, image in enumerate(frames):
        name, mae, iou = closest(image, served)
        assert mae < MAX_MAE and iou > MIN_IOU, f"frame {index}: closest to {name} (MAE {mae:.3f}, IoU {iou:.3f})"
        names.append(name)
    assert names[0] == "astronaut.png" and "rocket.jpg" in names, names
    switch = names.index("rocket.jpg")  # the first frame from the second server; none from the first after it
    assert names == ["astronaut.png"] * switch + ["rocket.jpg"] * (max_frames - switch), names
