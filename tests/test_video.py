"""``u2edge video`` / ``u2edge camera`` and the pipeline, on clips made from real photos: frame counts
and order, masks against single-image inference, the newest-frame policy, renderers and faults."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from conftest import decoded, make_clip, run_cli, small_disk
from u2edge import U2EdgeEngine, read_image, stream
from u2edge.errors import OutputError, SourceError
from u2edge.render import render
from u2edge.video import ImageSequenceSource, PerFileSink, Pipeline, Source, open_sink, open_source
from u2edge.video.sinks import NullSink, VideoFileSink
from u2edge.video.smooth import MaskSmoother


def error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("u2edge: error")]


# --- files: lossless, ordered, the same masks as single images ----------------------------------

def test_video_to_video_keeps_every_frame(clip, tmp_path):
    out = tmp_path / "masks.mp4"
    stats = json.loads(run_cli("video", clip, "-o", out, "--json").stdout)
    assert stats["frames"] == {"captured": 10, "processed": 10, "written": 10, "dropped": 0, "corrupt": 0}
    assert stats["stop"] == "end of source" and stats["network_fps"] > 0 and stats["end_to_end_fps"] > 0
    assert set(stats["stage_ms"]) == {"capture", "preprocess", "infer", "postprocess", "render", "write"}
    frames = decoded(out)
    assert len(frames) == 10 and frames[0].shape == (240, 320, 3)
    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10, abs=0.01)  # the source's frame rate
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode
    assert [p.name for p in tmp_path.iterdir()] == ["masks.mp4"]  # no temp file left


@pytest.mark.parametrize("size, fps, suffix", [((640, 360), 30, ".avi"), ((250, 170), 15, ".mp4")])
def test_sizes_rates_and_containers(photos, photo_dir, tmp_path, size, fps, suffix):
    moving = make_clip(tmp_path / f"in{suffix}", photos["motorcycle_left.png"], read_image(photo_dir / "brick.png"),
                       frames=6, size=size, fps=fps)
    out = tmp_path / f"out{suffix}"
    stats = json.loads(run_cli("video", moving, "-o", out, "--mode", "overlay", "--json").stdout)
    assert stats["frames"]["written"] == 6
    frames = decoded(out)
    assert len(frames) == 6 and frames[0].shape == (size[1], size[0], 3)
    assert cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FPS) == pytest.approx(fps, abs=0.01)


def test_masks_equal_single_image_inference_in_order(clip, tmp_path):
    run_cli("video", clip, "-o", tmp_path / "masks")
    written = sorted((tmp_path / "masks").iterdir())
    assert [p.name for p in written] == [f"frame_{i:06d}.png" for i in range(10)]
    with U2EdgeEngine() as engine:  # the same backend the CLI picks
        expected = [engine(frame) for frame in decoded(clip)]
    got = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in written]
    for i, (mask, ref) in enumerate(zip(got, expected)):
        assert np.abs(mask.astype(np.int16) - np.round(ref * 255)).max() <= 1, i
    # the cat moves: each frame's mask is its own, not a neighbour's
    centers = [np.argwhere(m > 127)[:, 1].mean() for m in got]
    assert all(a < b for a, b in zip(centers, centers[1:])), centers


def test_smooth_through_the_command_line(clip, tmp_path):
    """``--smooth`` without a value is the default filter, applied to the masks in order."""
    run_cli("video", clip, "-o", tmp_path / "masks", "--smooth")
    got = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted((tmp_path / "masks").iterdir())]
    smoother = MaskSmoother()
    with U2EdgeEngine() as engine:
        expected = [smoother(frame, engine(frame)) for frame in decoded(clip)]
    assert len(got) == len(expected) == 10
    for i, (mask, ref) in enumerate(zip(got, expected)):
        assert np.abs(mask.astype(np.int16) - np.round(ref * 255)).max() <= 1, i


def test_stream_api_yields_every_frame(clip, engine):
    masks = [(frame.shape, mask.shape) for frame, mask in stream(str(clip), engine=engine)]
    assert masks == [((240, 320, 3), (240, 320))] * 10


def test_leaving_the_stream_loop_stops_capture(clip, engine):
    threads = threading.active_count()
    frames = stream(str(clip), engine=engine)
    for i, (frame, mask) in enumerate(frames):
        if i == 1:
            break
    assert threading.active_count() == threads + 1  # the capture thread, until the loop is closed
    frames.close()  # what leaving a for loop over stream() does once nothing refers to it
    assert threading.active_count() == threads


def test_folder_source_skips_a_corrupt_frame(photo_paths, tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    for i, path in enumerate(photo_paths[:3]):
        (folder / f"{i}_{path.name}").write_bytes(path.read_bytes())
    (folder / "1b_broken.png").write_bytes(photo_paths[0].read_bytes()[:3000])
    proc = run_cli("video", folder, "-o", tmp_path / "out", "--json", "--mode", "cutout", check_rc=1)
    stats = json.loads(proc.stdout)
    assert stats["frames"]["written"] == 3 and stats["frames"]["corrupt"] == 1
    assert [line for line in proc.stderr.splitlines() if line.startswith("u2edge:")] == [
        f"u2edge: skipping a frame: {folder / '1b_broken.png'}: not a readable image (corrupt, empty, or an "
        "unsupported format)"]
    outs = sorted((tmp_path / "out").iterdir())
    assert len(outs) == 3 and all(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape[2] == 4 for p in outs)


# --- image lists: each frame to its own file, as ``u2edge image`` runs them -----------------------

def test_an_image_list_carries_each_path_to_a_per_file_sink(engine, photos, photo_paths, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    floats = tmp_path / "floats.tiff"  # decodes, but to float32 pixels, which no frame may have
    cv2.imwrite(str(floats), photos["coffee.png"].astype(np.float32) / 255)
    inputs = [photo_paths[1], broken, photo_paths[2], floats, photo_paths[0]]  # the order given is kept
    (tmp_path / "out").mkdir()
    jobs = [(p, tmp_path / "out" / f"{p.stem}.png") for p in inputs]
    corrupt, sink = [], PerFileSink(jobs)
    stats = Pipeline(ImageSequenceSource("five", inputs), engine, sink, render=lambda f, m: render(f, m, "mask"),
                     on_corrupt=corrupt.append).run()
    assert [str(e) for e in corrupt] == [  # each names its file
        f"{broken}: not a readable image (corrupt, empty, or an unsupported format)",
        f"{floats}: cannot convert a float32 image; expected uint8 or uint16 pixels"]
    assert stats.captured == 3 and stats.corrupt == 2 and stats.written == 3
    good = [p for p in inputs if p not in (broken, floats)]
    assert [(src, out) for src, out, _ in sink.files] == [(p, tmp_path / "out" / f"{p.stem}.png") for p in good]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{p.stem}.png" for p in good)
    for src, out, shape in sink.files:
        frame = read_image(src)
        mask = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
        assert mask.shape == shape == frame.shape[:2]
        assert np.abs(mask.astype(int) - np.rint(engine(frame) * 255)).max() <= 1, src


def test_the_per_file_sink_never_writes_onto_an_input(photo_paths, tmp_path):
    photo = tmp_path / "astronaut.png"
    photo.write_bytes(photo_paths[0].read_bytes())
    before = photo.read_bytes()
    with pytest.raises(OutputError, match="its output .*astronaut.png is an input; refusing to overwrite it"):
        PerFileSink([(photo_paths[1], tmp_path / "chelsea.png"), (photo, tmp_path / "." / "astronaut.png")])
    with pytest.raises(OutputError, match="is an input; refusing to overwrite it"):
        PerFileSink([(photo_paths[1], photo), (photo, tmp_path / "out.png")])  # another job's input
    assert photo.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["astronaut.png"]


def test_the_per_file_sink_writes_complete_files_or_none(photos, photo_paths, tmp_path):
    (tmp_path / "chelsea.png").mkdir()  # a folder where an output should go: moving it into place fails
    sink = PerFileSink([(photo_paths[0], tmp_path / "astronaut.png"), (photo_paths[1], tmp_path / "chelsea.png")])
    sink.write(photos["astronaut.png"], tag=photo_paths[0])
    with pytest.raises(OutputError, match=re.escape(f"cannot write {tmp_path / 'chelsea.png'}: ") +
                       ".*nothing was left behind"):
        sink.write(photos["chelsea.png"], tag=photo_paths[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["astronaut.png", "chelsea.png"]  # no temp file
    assert (tmp_path / "chelsea.png").is_dir() and sink.written == 1
    assert np.array_equal(cv2.imread(str(tmp_path / "astronaut.png")), photos["astronaut.png"])
    with pytest.raises(ValueError, match="no output planned for a frame tagged None"):
        sink.write(photos["coffee.png"])


@pytest.mark.parametrize("mode, width", [("overlay", 320), ("side-by-side", 640), ("cutout", 320)])
def test_renderers_to_video(clip, tmp_path, mode, width):
    out = tmp_path / f"{mode}.avi"
    run_cli("video", clip, "-o", out, "--mode", mode, "-q")
    frames = decoded(out)
    assert len(frames) == 10 and frames[0].shape == (240, width, 3)
    if mode == "cutout":  # no alpha in a video: the background shows a checkerboard
        corner = frames[0][:32, :32].astype(int)
        assert corner.max() - corner.min() > 30


def test_background_color_through_the_camera_command(clip, tmp_path):
    out = tmp_path / "green.mp4"
    stats = json.loads(run_cli("camera", clip, out, "--bg-color", "#00ff00", "--max-frames", "4", "--json").stdout)
    assert stats["frames"]["written"] == 4
    first = decoded(out)[0]
    assert np.abs(first[5:20, 5:40].astype(int) - (0, 255, 0)).mean() < 40  # grass replaced by green


# --- live sources: the newest frame, bounded latency --------------------------------------------

class GatedEngine(U2EdgeEngine):
    """The real engine, whose first frame waits until ``gate`` is set; ``started`` says that it
    has that frame."""

    def __init__(self) -> None:
        super().__init__(max_batch=1)
        self.started, self.gate = threading.Event(), threading.Event()

    def submit(self, frames, **options):
        self.started.set()
        self.gate.wait()
        return super().submit(frames, **options)


class BurstSource(Source):
    """A live source that delivers its first real frame, then the rest at once as soon as the
    engine has the first, then ends and opens the engine's gate."""

    live = True

    def __init__(self, frames: list[np.ndarray], engine: GatedEngine) -> None:
        self.uri, self.frames, self.engine, self.delivered = "burst://test", frames, engine, 0

    def read(self):
        if self.delivered == 1:
            self.engine.started.wait()
        if self.delivered == len(self.frames):
            self.engine.gate.set()  # asked for more only after the last frame was queued
            return None
        self.delivered += 1
        return self.frames[self.delivered - 1]


def test_a_live_source_keeps_only_the_newest_frame(photos):
    frames = [photos[name].copy() for name in ("chelsea.png", "coffee.png")] * 30
    kept = []
    with GatedEngine() as engine:
        stats = Pipeline(BurstSource(frames, engine), engine, NullSink(),
                         render=lambda frame, mask: kept.append(frame) or mask).run()
    # the first frame ran while the other 59 arrived: the 58 in between were replaced, the newest ran
    assert (stats.captured, stats.processed, stats.written, stats.dropped) == (60, 2, 2, 58)
    assert kept[0] is frames[0] and kept[1] is frames[-1]


class FastCamera(Source):
    """A live source faster than the network: its first frame, then, once the engine has that one,
    a frame on every read, without end; the engine's gate opens after ``burst`` frames."""

    live = True

    def __init__(self, frame: np.ndarray, engine: GatedEngine, burst: int) -> None:
        self.uri, self.frame, self.engine, self.burst, self.delivered = "fast://test", frame, engine, burst, 0

    def read(self):
        if self.delivered == 1:
            self.engine.started.wait()
        elif self.delivered == self.burst:
            self.engine.gate.set()
        self.delivered += 1
        return self.frame


def test_max_frames_counts_the_frames_written_not_those_captured(photos):
    """Before the fix, capture stopped at 4 frames, of which the newest-frame policy dropped 2."""
    with GatedEngine() as engine:
        stats = Pipeline(FastCamera(photos["coffee.png"], engine, burst=3), engine, NullSink(), max_frames=4).run()
    assert stats.written == 4 and stats.stop_reason == "max frames"
    assert stats.dropped >= 2 and stats.captured > 4


class StepSource(Source):
    """A live source that delivers its next frame only after the pipeline has processed the last
    one, like a camera slower than the network."""

    live = True

    def __init__(self, frame: np.ndarray, count: int) -> None:
        self.uri, self.frame, self.count = "step://test", frame, count
        self.ready = threading.Semaphore(1)

    def read(self):
        self.ready.acquire()
        if self.count == 0:
            return None
        self.count -= 1
        return self.frame


def test_a_slow_live_source_drops_nothing(engine, photos):
    source = StepSource(photos["chelsea.png"], 5)
    stats = Pipeline(source, engine, NullSink(), on_frame=lambda stats: source.ready.release()).run()
    assert stats.dropped == 0 and stats.written == 5


class FlakySource(Source):
    """A live source of a real photo that stops delivering after ``fail_after`` frames, like an
    unplugged camera; with ``recover`` it comes back once reopened."""

    live = True

    def __init__(self, frame: np.ndarray, fail_after: int, recover: bool = False) -> None:
        self.uri, self.frame, self.fail_after, self.recover = "paced://test", frame, fail_after, recover
        self.delivered = self.reopened = 0

    def read(self):
        if self.delivered >= self.fail_after and not (self.recover and self.reopened):
            raise SourceError("paced://test stopped delivering frames (unplugged)")
        self.delivered += 1
        return self.frame

    def reopen(self) -> None:
        self.reopened += 1


class BrokenSource(Source):
    """A file-like source with a bug: its read raises after ``good`` real frames."""

    live = False

    def __init__(self, frames: list[np.ndarray], good: int) -> None:
        self.uri, self.frames, self.good = "broken://test", frames, good

    def read(self):
        if self.good == 0:
            raise RuntimeError("index out of range in the decoder")
        self.good -= 1
        return self.frames[self.good % len(self.frames)]


def test_a_source_bug_keeps_the_video_written_so_far(engine, photos, tmp_path):
    frames = [cv2.resize(photos[n], (320, 240)) for n in ("chelsea.png", "coffee.png")]
    stats = Pipeline(BrokenSource(frames, 7), engine, VideoFileSink(tmp_path / "out.mp4", fps=5),
                     render=lambda frame, mask: frame).run()
    assert stats.stop_reason == "source failed" and stats.written == 7
    assert stats.error == "broken://test failed after 7 frames (RuntimeError: index out of range in the decoder)"
    assert len(decoded(tmp_path / "out.mp4")) == 7  # finalized, not thrown away
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_a_source_bug_ends_the_stream_api_with_one_source_error(engine, photos):
    masks = []
    with pytest.raises(SourceError, match=r"^broken://test failed after 3 frames \(RuntimeError: index out of"):
        for frame, mask in Pipeline(BrokenSource([photos["coffee.png"]], 3), engine):
            masks.append(mask)
    assert len(masks) == 3


def test_an_unplugged_camera_is_retried_then_stops_with_a_finalized_video(engine, photos, tmp_path):
    source = FlakySource(photos["coffee.png"], fail_after=3)
    sink = VideoFileSink(tmp_path / "live.mp4", fps=5)
    stats = Pipeline(source, engine, sink, retries=2, backoff=0.01, render=lambda f, m: f).run()
    assert stats.retries == 2 and source.reopened == 2 and stats.stop_reason == "source failed"
    assert stats.error == "paced://test stopped delivering frames (unplugged); gave up after 2 retries"
    assert stats.captured == 3 and stats.written + stats.dropped == 3  # live: newest frames only
    assert len(decoded(tmp_path / "live.mp4")) == stats.written >= 1


def test_a_camera_that_comes_back_goes_on(engine, photos):
    source = FlakySource(photos["coffee.png"], fail_after=2, recover=True)
    stats = Pipeline(source, engine, NullSink(), retries=3, backoff=0.01, max_frames=5).run()
    assert stats.retries == 1 and stats.error is None and stats.written == 5


# --- faults through the command line ------------------------------------------------------------

def test_missing_camera_names_the_devices_that_exist():
    proc = run_cli("camera", "/dev/video9", "null", check_rc=1)
    devices = sorted(p for p in os.listdir("/dev") if p.startswith("video"))
    assert len(error_lines(proc)) == 1 and "camera /dev/video9 not found; video devices here: " in proc.stderr
    assert all(f"/dev/{d}" in proc.stderr for d in devices)


def test_no_display_is_one_line_and_headless_runs(clip):
    env = {"DISPLAY": "", "WAYLAND_DISPLAY": ""}
    proc = run_cli("camera", clip, env=env, check_rc=1)
    assert error_lines(proc) == ["u2edge: error: display://0: no display here (DISPLAY is not set); use "
                                 "--headless, or a video file, a folder or null as the sink"]
    proc = run_cli("camera", clip, "--headless", "--max-frames", "2", "--json", env=env)
    assert json.loads(proc.stdout)["frames"]["written"] == 2


@pytest.mark.skipif(re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()) is not None,
                    reason="this OpenCV has GStreamer, so the pipeline opens")
def test_gstreamer_sources_without_gstreamer_say_so():
    proc = run_cli("camera", "videotestsrc ! videoconvert ! appsink", "null", check_rc=1)
    assert len(error_lines(proc)) == 1 and "has no GStreamer" in proc.stderr


def test_sigterm_finalizes_the_video(photos, photo_dir, tmp_path):
    long_clip = make_clip(tmp_path / "long.mp4", photos["astronaut.png"], read_image(photo_dir / "grass.png"),
                          frames=200, size=(320, 240), fps=25)
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "u2edge", "video", long_clip, "-o", out, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith(".out.") and p.stat().st_size > 0
                                             for p in tmp_path.iterdir()):
        time.sleep(0.2)  # polls for the evidence that frames are being written
    proc.send_signal(signal.SIGSTOP)  # frozen mid-stream, so the signal cannot come after the end
    assert proc.poll() is None, "the job ended before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "u2edge: terminated" in stderr
    stats = json.loads(stdout)
    assert stats["stop"] == "interrupted" and 0 < stats["frames"]["written"] < 200
    assert len(decoded(out)) == stats["frames"]["written"]  # complete and playable
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4", "out.mp4"]


def test_a_full_disk_leaves_no_corrupt_file(clip, tmp_path):
    with small_disk(tmp_path / "tiny", "96k") as tiny:
        proc = run_cli("video", clip, "-o", tiny / "out.avi", "--mode", "side-by-side", check_rc=1)
        assert len(error_lines(proc)) == 1 and "the disk is full" in proc.stderr
        assert list(tiny.iterdir()) == []
        proc = run_cli("video", clip, "-o", tiny / "frames", "--mode", "cutout", check_rc=1)
        assert len(error_lines(proc)) == 1 and "the disk is full" in proc.stderr
        frames = list((tiny / "frames").iterdir())
        assert all(cv2.imread(str(p), cv2.IMREAD_UNCHANGED) is not None for p in frames)  # each complete
        assert not any(p.name.startswith(".") for p in frames)


def test_unwritable_sinks(clip, tmp_path):
    # /proc takes no new files, not even from root
    for sink in ("/proc/u2edge-test/out.mp4", "/proc/u2edge-test/frames"):
        proc = run_cli("video", clip, "-o", sink, check_rc=1)
        assert len(error_lines(proc)) == 1 and "/proc/u2edge-test" in proc.stderr, proc.stderr


def test_bad_sources_and_sinks(clip, tmp_path):
    proc = run_cli("video", tmp_path / "nothing.mp4", "-o", tmp_path / "x.mp4", check_rc=1)
    assert error_lines(proc) == [f"u2edge: error: no such file, folder or camera: {tmp_path / 'nothing.mp4'} "
                                 "(sources: /dev/videoN, N, csi://N, rtsp://..., a video file, an image folder or "
                                 "glob, or a GStreamer pipeline)"]
    proc = run_cli("video", clip, "-o", tmp_path / "x.webm", check_rc=1)
    assert error_lines(proc) == ["u2edge: error: cannot write .webm videos; name the output .mp4 or .avi"]
    proc = run_cli("video", clip, "-o", clip, check_rc=1)
    assert "is the input; refusing to overwrite it" in proc.stderr
    proc = run_cli("video", clip, "-o", tmp_path / "y.mp4", "--max-frames", "0", check_rc=1)
    assert error_lines(proc) == ["u2edge: error: --max-frames 0 must be at least 1"]
    proc = run_cli("video", clip, "-o", tmp_path / "y.mp4", "--smooth", "1.5", check_rc=1)
    assert error_lines(proc) == ["u2edge: error: --smooth 1.5 must be at least 0 and below 1 (without a value: 0.6)"]
    assert not list(tmp_path.glob("*y*"))  # the refused runs left no temp file
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"not a folder")
    with pytest.raises(OutputError, match="is a file; give a folder, a video file name"):
        open_sink(str(photo))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no images"):
        open_source(str(tmp_path / "empty"))
