"""GStreamer for real: u2edge beside the system's OpenCV (Debian's python3-opencv, built with
GStreamer, as JetPack's is), in an environment of its own (``make test`` builds .venv-system).

Frames come from real photos as PNG files, read through ``multifilesrc ! pngdec``, so a pipeline
delivers exactly the frames the folder holds and the masks can be compared with ``u2edge video``'s
on the folder itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import run_cli
from u2edge.bench.clips import moving_subject_frames
from u2edge.video.sources import live_pipeline

ROOT = Path(__file__).resolve().parent.parent
FRAMES = 12
SIZE = (320, 240)


def system_u2edge() -> Path:
    """The ``u2edge`` of the environment beside the system OpenCV; skips where there is none."""
    venv = Path(os.environ.get("U2EDGE_SYSTEM_VENV", ROOT / ".venv-system"))
    venv = venv if venv.is_absolute() else ROOT / venv
    exe = venv / "bin" / "u2edge"
    if not exe.exists():
        pytest.skip(f"no {exe}: make test builds it where the system's python3-opencv has GStreamer "
                    "(make system-packages installs it on Debian)")
    return exe


def run_system(*args, check_rc: int | None = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(system_u2edge()), *map(str, args)], capture_output=True, text=True)
    if check_rc is not None:
        assert proc.returncode == check_rc, f"rc {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def frames_dir(photos, tmp_path_factory) -> Path:
    """A subject sliding over a background, from real photos, as frame_000.png ..."""
    folder = tmp_path_factory.mktemp("gst_frames")
    for i, frame in enumerate(moving_subject_frames(photos["chelsea.png"], photos["coffee.png"], frames=FRAMES,
                                                    size=SIZE)):
        cv2.imwrite(str(folder / f"frame_{i:03d}.png"), frame)
    return folder


def png_pipeline(folder: Path, extra: str = "") -> str:
    return (f"multifilesrc location={folder}/frame_%03d.png index=0 caps=image/png,framerate=10/1 {extra}! pngdec ! "
            "videoconvert ! video/x-raw,format=BGR ! appsink")


@pytest.fixture(scope="module")
def reference_masks(frames_dir, tmp_path_factory) -> list[np.ndarray]:
    """``u2edge video`` on the folder itself, with pip's OpenCV: the masks every pipeline must give."""
    out = tmp_path_factory.mktemp("gst_ref")
    run_cli("video", frames_dir, "-o", out, "--precision", "fp32", "-q")
    return read_frames(out)


def read_frames(folder: Path) -> list[np.ndarray]:
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.glob("frame_*.png"))]


def assert_same_masks(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1, f"frame {i} differs by more than 1/255"


def test_pipelines_from_a_camera_or_the_network_are_live():
    assert live_pipeline("v4l2src device=/dev/video0 ! videoconvert ! appsink")
    assert live_pipeline("rtspsrc location=rtsp://cam/stream latency=0 ! decodebin ! videoconvert ! appsink")
    assert live_pipeline("videotestsrc is-live=true ! videoconvert ! appsink")
    assert live_pipeline("uridecodebin uri=rtsp://cam/stream ! videoconvert ! appsink")
    assert not live_pipeline("filesrc location=clip.mp4 ! qtdemux ! h264parse ! nvv4l2decoder ! nvvidconv ! appsink")
    assert not live_pipeline("videotestsrc num-buffers=60 ! videoconvert ! appsink")
    assert not live_pipeline("uridecodebin uri=file:///data/clip.mp4 ! videoconvert ! appsink")


@pytest.mark.slow
def test_a_finite_pipeline_ends_at_end_of_stream_in_both_commands(frames_dir, reference_masks, tmp_path):
    """Before the fix, ``u2edge camera`` took the end of stream for an unplugged camera and played the
    pipeline over and over; ``u2edge video`` refused pipelines as live."""
    pipeline = png_pipeline(frames_dir)
    for command, out in (("camera", tmp_path / "camera"), ("video", tmp_path / "video")):
        args = [command, pipeline, out] if command == "camera" else [command, pipeline, "-o", out]
        proc = run_system(*args, "--precision", "fp32", "--json", *(["--headless"] if command == "camera" else []))
        stats = json.loads(proc.stdout)
        assert stats["stop"] == "end of source", command
        assert stats["frames"]["written"] == FRAMES and stats["retries"] == 0, command
        assert_same_masks(read_frames(out), reference_masks)


@pytest.mark.slow
def test_a_live_pipeline_stops_at_max_frames_written(tmp_path):
    """A live pipeline through ``camera`` keeps the newest frame (it drops stale ones), so
    ``--max-frames`` must count the frames written, not those captured."""
    pipeline = ("videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! "
                "videoconvert ! video/x-raw,format=BGR ! appsink")
    assert live_pipeline(pipeline)
    proc = run_system("camera", pipeline, tmp_path / "out.mp4", "--headless", "--max-frames", "5", "--precision",
                      "fp32", "--json")
    stats = json.loads(proc.stdout)
    assert stats["stop"] == "max frames" and stats["frames"]["written"] == 5
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5


@pytest.mark.slow
def test_a_gstreamer_sink_writes_h264(frames_dir, tmp_path):
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe is not installed (make system-packages installs ffmpeg)")
    out = tmp_path / "out.mp4"
    sink = f"appsrc ! videoconvert ! x264enc speed-preset=ultrafast ! mp4mux ! filesink location={out}"
    run_system("video", png_pipeline(frames_dir), "-o", sink, "--precision", "fp32", "-q")
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
                            "stream=codec_name,nb_read_frames,width,height", "-of", "json", str(out)],
                           capture_output=True, text=True, check=True)
    stream = json.loads(probe.stdout)["streams"][0]
    assert stream["codec_name"] == "h264" and int(stream["nb_read_frames"]) == FRAMES
    assert (stream["width"], stream["height"]) == SIZE


def test_the_system_environment_keeps_the_system_opencv_and_numpy():
    """pip's opencv-python would shadow Debian's cv2 and pull numpy 2, which Debian's cv2 is not built for."""
    python = system_u2edge().parent / "python"
    probe = subprocess.run([str(python), "-c", "import cv2, numpy; print(cv2.__file__); print(numpy.__version__)"],
                           capture_output=True, text=True, check=True)
    cv2_file, numpy_version = probe.stdout.split()
    assert cv2_file.startswith("/usr/lib/python3/dist-packages/")
    assert numpy_version.startswith("1.")
