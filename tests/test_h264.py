"""H.264 video files through PyAV: what ffprobe reads in them (codec, pixel format, frame count, frame
rate), odd frame sizes, masks against single-image inference, crf, the fallback to mp4v without PyAV,
a full disk, and the refusals of codecs and crf that cannot apply."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import decoded, run_cli, small_disk
from u2edge import read_image
from u2edge._deps import available
from u2edge.bench.clips import moving_subject_frames, write_clip
from u2edge.errors import OutputError
from u2edge.info import opencv_features
from u2edge.render import render
from u2edge.video import Pipeline, open_sink, open_source
from u2edge.video.sinks import VideoFileSink

needs_av = pytest.mark.skipif(not available("av"), reason="PyAV is not installed: pip install 'u2edge[h264]'")
FFPROBE = shutil.which("ffprobe")
needs_ffprobe = pytest.mark.skipif(FFPROBE is None, reason="ffprobe is not installed (apt install ffmpeg)")
# runs u2edge as `python -m u2edge` does, with PyAV unimportable, as on a machine without it
WITHOUT_AV = "import sys; sys.modules['av'] = None; from u2edge.cli import main; sys.exit(main(sys.argv[1:]))"


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def probe(path: Path) -> dict:
    """ffprobe's view of the first video stream, its frames counted by decoding them all."""
    out = subprocess.run([FFPROBE, "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=codec_name,pix_fmt,width,height,r_frame_rate,avg_frame_rate,nb_read_frames",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["streams"][0]


def fourcc(path: Path) -> str:
    code = int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FOURCC))
    return "".join(chr((code >> 8 * i) & 0xFF) for i in range(4))


@pytest.fixture(scope="module")
def grass(photo_dir) -> np.ndarray:
    return read_image(photo_dir / "grass.png")


def scene(photos, grass, size: tuple[int, int], frames: int = 8) -> list[np.ndarray]:
    """The astronaut sliding over grass: real photos, a moving subject."""
    return moving_subject_frames(photos["astronaut.png"], grass, frames=frames, size=size)


def write(sink, frames: list[np.ndarray]):
    for frame in frames:
        sink.write(frame)
    sink.close()
    return sink


# --- what players see ---------------------------------------------------------------------------

@needs_av
@needs_ffprobe
@pytest.mark.parametrize("size, fps, rate, suffix", [
    ((320, 240), 10, "10/1", ".mp4"), ((251, 171), 30000 / 1001, "30000/1001", ".mp4"),  # odd, at NTSC's 29.97
    ((250, 170), 15, "15/1", ".mkv"), ((320, 240), 24, "24/1", ".mov")])
def test_auto_writes_h264_that_ffprobe_reads(photos, grass, tmp_path, size, fps, rate, suffix):
    frames = scene(photos, grass, size)
    out = tmp_path / f"out{suffix}"
    assert write(open_sink(str(out), fps=fps), frames).codec == "h264"
    width, height = size[0] + size[0] % 2, size[1] + size[1] % 2  # yuv420p: odd sizes padded by one pixel
    assert probe(out) == {"codec_name": "h264", "pix_fmt": "yuv420p", "width": width, "height": height,
                          "r_frame_rate": rate, "avg_frame_rate": rate, "nb_read_frames": "8"}
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # renamed into place, no temp file left
    got = decoded(out)  # OpenCV (pip's) decodes it too: the read-back that finalized it
    assert len(got) == 8 and got[0].shape == (height, width, 3)
    for frame, back in zip(frames, got):
        # measured: mean error at most 4.0 (yuv420p and crf 23); the padding repeats the edge (2.9 from it),
        # where neighbouring columns of grass differ by 19 on average
        assert np.abs(back[:size[1], :size[0]].astype(int) - frame).mean() < 6
        if width != size[0]:
            assert np.abs(back[:, -1].astype(int) - back[:, -2]).mean() < 8
        if height != size[1]:
            assert np.abs(back[-1].astype(int) - back[-2]).mean() < 8


@needs_av
@needs_ffprobe
def test_u2edge_video_writes_h264_by_default(clip, tmp_path):
    out = tmp_path / "masks.mp4"
    stats = json.loads(run_cli("video", clip, "-o", out, "--json").stdout)
    assert stats["frames"]["written"] == 10
    assert probe(out) == {"codec_name": "h264", "pix_fmt": "yuv420p", "width": 320, "height": 240,
                          "r_frame_rate": "10/1", "avg_frame_rate": "10/1", "nb_read_frames": "10"}


@needs_av
def test_masks_through_h264_match_single_image_masks(engine, photos, grass, tmp_path):
    clip = write_clip(tmp_path / "in.avi", scene(photos, grass, (320, 240), frames=6), 6)
    out = tmp_path / "masks.mp4"
    sink = open_sink(str(out), fps=6)
    stats = Pipeline(open_source(str(clip)), engine, sink, render=lambda frame, mask: render(frame, mask, "mask")).run()
    assert stats.written == 6 and sink.codec == "h264"
    got = decoded(out)
    assert len(got) == 6
    for i, (frame, back) in enumerate(zip(decoded(clip), got)):
        ref = np.rint(engine(frame) * 255)
        gray = back[:, :, 1].astype(float)
        error = np.abs(gray - ref)
        inside, expected = gray > 127, ref > 127
        # measured at crf 23: mean error at most 0.57, 99th percentile 9, IoU of the halves 0.988 to 0.9995
        # (mp4v: 0.59, 5, 0.992); the last frame, where the subject meets the edge, is the lowest in both
        assert error.mean() < 1.0 and np.percentile(error, 99) <= 16, i
        assert (inside & expected).sum() / (inside | expected).sum() > 0.975, i


@needs_av
def test_crf_trades_size_for_fidelity(photos, grass, tmp_path):
    frames = scene(photos, grass, (320, 240))
    sizes, errors = {}, {}
    for crf in (18, 35):
        out = tmp_path / f"crf{crf}.mp4"
        write(VideoFileSink(out, 10, codec="h264", crf=crf), frames)
        sizes[crf] = out.stat().st_size
        errors[crf] = np.mean([np.abs(b.astype(int) - f).mean() for f, b in zip(frames, decoded(out))])
    assert sizes[35] < sizes[18] / 2 and errors[35] > errors[18]  # measured: 13.9 kB vs 53.6 kB; 10.5 vs 2.6


# --- complete or absent -------------------------------------------------------------------------

@needs_av
def test_a_full_disk_leaves_no_h264_file(photos, grass, tmp_path):
    frames = scene(photos, grass, (320, 240), frames=12)
    with small_disk(tmp_path / "tiny", "96k") as tiny:
        sink = open_sink(str(tiny / "out.mp4"), fps=12, crf=0)  # lossless: about 15 kB a frame
        with pytest.raises(OutputError, match=rf"^could not write the video {tiny / 'out.mp4'}: the disk is full; "
                                              "nothing was left behind$"):
            write(sink, frames)  # PyAV's own error, raised by a write or by close, is this one line
        assert list(tiny.iterdir()) == []
        sink.abort()  # what the pipeline does after a failed write: harmless now


@needs_av
def test_abort_removes_the_h264_file(photos, grass, tmp_path):
    sink = VideoFileSink(tmp_path / "out.mp4", 10, codec="h264")
    for frame in scene(photos, grass, (320, 240), frames=3):
        sink.write(frame)
    sink.abort()
    sink.close()  # harmless after abort
    assert list(tmp_path.iterdir()) == []


# --- without PyAV -------------------------------------------------------------------------------

def test_without_pyav_auto_falls_back_to_mp4v_and_h264_says_how_to_get_it(clip, tmp_path):
    out = tmp_path / "masks.mp4"
    proc = subprocess.run([sys.executable, "-c", WITHOUT_AV, "video", str(clip), "-o", str(out), "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["frames"]["written"] == 10
    assert fourcc(out) == "FMP4" and len(decoded(out)) == 10  # OpenCV's decoder names MPEG-4 Part 2 (mp4v) FMP4
    assert ("u2edge: writing masks.mp4 as mp4v, which browsers do not play: PyAV is not installed; for H.264: "
            "pip install 'u2edge[h264]'") in proc.stderr.splitlines()
    proc = subprocess.run([sys.executable, "-c", WITHOUT_AV, "video", str(clip), "-o", str(tmp_path / "x.mp4"),
                           "--codec", "h264"], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.splitlines() == [
        "u2edge: error: --codec h264 needs PyAV with libx264, and PyAV is not installed; install it with: "
        "pip install 'u2edge[h264]' (its FFmpeg bundles libx264, GPL)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks.mp4"]


def test_pyav_is_imported_only_to_write_a_video():
    script = ("import sys\n"
              "import u2edge.cli, u2edge.video\n"
              "from u2edge.video import open_sink\n"
              "open_sink('null')\n"
              "print('av' in sys.modules)\n")
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True).stdout == "False\n"


# --- refusals, each one line naming the parameter -------------------------------------------------

@pytest.mark.parametrize("output, options, message", [
    ("x.avi", {"codec": "h264"}, "{codec} h264 goes into .mp4, .m4v, .mov or .mkv, not .avi; rename the output, or "
                                 "choose {codec} mjpg or mp4v for .avi"),
    ("x.mp4", {"codec": "mjpg"}, "{codec} mjpg cannot go into .mp4; it goes into .avi, .mov, .mkv"),
    ("x.mp4", {"codec": "h265"}, "{codec} 'h265' is not one of auto, h264, mp4v, mjpg"),
    ("x.mp4", {"codec": "mp4v", "crf": 30}, "{crf} 30 is for H.264, and x.mp4 is mp4v; drop it, or choose {codec} "
                                            "h264"),
    ("x.avi", {"crf": 30}, "{crf} 30 is for H.264, and x.avi is mjpg; drop it, or choose {codec} h264"),
    ("x.mp4", {"crf": 52}, "{crf} 52 is out of range; give 0 (lossless) to 51 (smallest), 23 by default"),
    ("frames", {"codec": "h264"}, "{codec} h264 is for video files, and this sink is a folder of PNG frames"),
    ("null", {"crf": 20}, "{crf} 20 is for H.264 video files, and this sink is null"),
])
def test_codec_and_crf_refusals_name_the_parameter(tmp_path, output, options, message):
    with pytest.raises(OutputError) as caught:
        open_sink(str(tmp_path / output) if output != "null" else output, **options)
    assert str(caught.value) == message.format(codec="codec", crf="crf")
    assert caught.value.message(flag) == message.format(codec="--codec", crf="--crf")
    assert list(tmp_path.iterdir()) == []  # refused before anything was created


@pytest.mark.parametrize("args, line", [
    (["-o", "x.avi", "--codec", "h264"], "--codec h264 goes into .mp4, .m4v, .mov or .mkv, not .avi; rename the "
                                         "output, or choose --codec mjpg or mp4v for .avi"),
    (["-o", "x.mp4", "--crf", "60"], "--crf 60 is out of range; give 0 (lossless) to 51 (smallest), 23 by default"),
])
def test_the_command_line_names_the_flags(clip, tmp_path, args, line):
    proc = run_cli("video", clip, *args, check_rc=1, cwd=tmp_path)
    assert proc.stderr.splitlines() == [f"u2edge: error: {line}"]
    assert list(tmp_path.iterdir()) == []


def test_a_gstreamer_sink_must_start_with_appsrc():
    with pytest.raises(OutputError, match=r"^videotestsrc ! fakesink: a GStreamer sink pipeline starts with appsrc"):
        open_sink("videotestsrc ! fakesink")


@pytest.mark.skipif(bool(opencv_features().get("gstreamer")), reason="this OpenCV has GStreamer")
def test_a_gstreamer_sink_without_gstreamer_says_so():
    with pytest.raises(OutputError, match=r"^appsrc ! videoconvert ! fakesink: this OpenCV \(.+\) has no GStreamer, "
                                          r"so it cannot write to a pipeline; use one built with it \(Debian's or "
                                          r"JetPack's python3-opencv"):
        open_sink("appsrc ! videoconvert ! fakesink", fps=10)
