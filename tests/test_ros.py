"""The ROS 2 node: message conversion and the node's frame work without ROS, then a real node end to
end, inside a private network namespace (tests/netns.py), against ``u2edge image`` on real photos."""

from __future__ import annotations

import array
import importlib.util
import json
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from conftest import run_cli
from netns import private_env, private_network, require_private_network
from u2edge.errors import ImageError, ModelFormatError
from u2edge.render import Background, Mode, render
from u2edge.ros.convert import ENCODINGS, image_array, image_fields, to_bgr
from u2edge.ros.node import ParameterError, Processor, Settings

HELPER = Path(__file__).parent / "ros_roundtrip.py"
_FROM_BGR = {"bgr8": None, "rgb8": cv2.COLOR_BGR2RGB, "bgra8": cv2.COLOR_BGR2BGRA, "rgba8": cv2.COLOR_BGR2RGBA,
             "mono8": cv2.COLOR_BGR2GRAY}


def message(pixels: np.ndarray, encoding: str, pad: int = 0, data_type=bytes, frame_id: str = "camera",
            stamp: tuple[int, int] = (0, 0)) -> SimpleNamespace:
    """An object with sensor_msgs/Image's fields; rows padded with ``pad`` bytes of 0xAB."""
    height, width = pixels.shape[:2]
    row = pixels[0].size
    padded = np.full((height, row + pad), 0xAB, np.uint8)
    padded[:, :row] = pixels.reshape(height, row)
    data = array.array("B", padded.tobytes()) if data_type is array.array else data_type(padded.tobytes())
    header = SimpleNamespace(frame_id=frame_id, stamp=SimpleNamespace(sec=stamp[0], nanosec=stamp[1]))
    return SimpleNamespace(header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
                           step=row + pad, data=data)


def encode(frame: np.ndarray, encoding: str) -> np.ndarray:
    code = _FROM_BGR[encoding]
    pixels = frame if code is None else cv2.cvtColor(frame, code)
    if encoding in ("bgra8", "rgba8"):
        pixels[:, :, 3] = (np.arange(pixels.shape[1]) % 256).astype(np.uint8)[None, :]  # an alpha that must be ignored
    return pixels


# --- convert: no ROS ----------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("pad", [0, 13])
@pytest.mark.parametrize("data_type", [bytes, array.array, list])
def test_every_encoding_becomes_the_bgr_frame(photos, encoding, pad, data_type):
    frame = photos["chelsea.png"]
    msg = message(encode(frame, encoding), encoding, pad, data_type)
    bgr = to_bgr(msg)
    expected = cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR) if encoding == "mono8" \
        else frame
    assert bgr.dtype == np.uint8 and bgr.flags.c_contiguous and bgr.flags.writeable
    np.testing.assert_array_equal(bgr, expected)


def test_the_last_rows_padding_may_be_left_out(photos):
    frame = photos["coffee.png"]
    msg = message(frame, "bgr8", pad=5)
    msg.data = msg.data[:-5]
    np.testing.assert_array_equal(to_bgr(msg), frame)


def test_rendered_outputs_round_trip_through_message_fields(photos, engine):
    frame = photos["astronaut.png"]
    mask = engine(frame)
    for mode, encoding in ((Mode.MASK, "mono8"), (Mode.OVERLAY, "bgr8"), (Mode.CUTOUT, "bgra8")):
        image = render(frame, mask, mode)
        fields = image_fields(image)
        assert fields["encoding"] == encoding and fields["is_bigendian"] == 0
        assert (fields["height"], fields["width"]) == frame.shape[:2]
        assert fields["step"] == frame.shape[1] * ENCODINGS[encoding]
        assert isinstance(fields["data"], array.array) and fields["data"].typecode == "B"
        assert len(fields["data"]) == fields["step"] * fields["height"]
        np.testing.assert_array_equal(image_array(SimpleNamespace(**fields)), image)
    view = render(frame, mask, Mode.OVERLAY)[::2, ::3]  # not contiguous: made so
    np.testing.assert_array_equal(image_array(SimpleNamespace(**image_fields(view))), view)


@pytest.mark.parametrize("fields, fragment", [
    ({"encoding": "yuv422"}, "encoding 'yuv422' is not supported; publish bgr8, rgb8, bgra8, rgba8, mono8"),
    ({"encoding": "mono16"}, "encoding 'mono16' is not supported"),
    ({"encoding": "32FC1"}, "encoding '32FC1' is not supported"),
    ({"step": 10}, "with step 10: a row takes 12 bytes, so step must be at least 12"),
    ({"data": bytes(12 * 3 - 1)}, "a 4x3 bgr8 image with step 12 needs 36 bytes of data, has 35"),
    ({"data": b""}, "needs 36 bytes of data, has 0"),
    ({"height": 0, "data": b""}, "an empty 4x0 bgr8 image"),
])
def test_bad_messages_are_one_clear_error(fields, fragment):
    msg = SimpleNamespace(**{"height": 3, "width": 4, "encoding": "bgr8", "is_bigendian": 0, "step": 12,
                             "data": bytes(36), **fields})
    with pytest.raises(ImageError) as info:
        to_bgr(msg)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_only_8_bit_gray_bgr_and_bgra_images_have_fields():
    for image in (np.zeros((4, 4), np.float32), np.zeros((4, 4, 2), np.uint8), np.zeros(4, np.uint8)):
        with pytest.raises(ImageError, match="has no ROS encoding here"):
            image_fields(image)


# --- the node's settings and frame work: no ROS ------------------------------------------------------

def test_settings_from_parameter_values():
    assert Settings.parse({}) == Settings()
    assert Settings().outputs == ("mask",) and Settings().qos == "sensor_data" and Settings().max_rate == 0
    settings = Settings.parse({"max_rate": 10, "smooth": 0.6, "outputs": "mask, overlay,mask", "bg_blur": 31.0,
                               "precision": "fp32", "qos": "reliable"})
    assert settings.max_rate == 10.0 and settings.outputs == ("mask", "overlay") and settings.bg_blur == 31
    assert Settings.parse({"outputs": ["background", "mask"], "bg_color": "0,255,0"}).background().color == (0, 255, 0)
    # the engine depends on engine, model (when no file) and precision only
    assert Settings(outputs=("overlay",), smooth=0.5).engine_key == Settings().engine_key
    assert Settings(engine="x.onnx", model="u2net").engine_key == Settings(engine="x.onnx").engine_key
    assert Settings(model="u2net").engine_key != Settings().engine_key


@pytest.mark.parametrize("values, fragment", [
    ({"model": "u3net"}, "parameter model 'u3net' is not one of u2net, u2netp"),
    ({"precision": "fp64"}, "parameter precision 'fp64' is not one of auto, fp32, bf16, int8"),
    ({"outputs": ["mask", "depth"]}, "parameter outputs: 'depth' is not an output; choose from mask, overlay"),
    ({"outputs": []}, "parameter outputs is empty"),
    ({"outputs": [1, 2]}, "parameter outputs must be a list of names"),
    ({"qos": "fast"}, "parameter qos 'fast' is not one of sensor_data, reliable"),
    ({"max_rate": -1}, "parameter max_rate -1 must be 0 (unlimited) or a rate in Hz"),
    ({"max_rate": "fast"}, "parameter max_rate must be a number, got 'fast'"),
    ({"max_rate": float("nan")}, "parameter max_rate must be a number"),
    ({"smooth": 1.0}, "parameter smooth 1 must be at least 0 (off) and below 1"),
    ({"smooth": True}, "parameter smooth must be a number, got True"),
    ({"bg_blur": 2.5}, "parameter bg_blur 2.5 must be 0 (off) or a positive kernel size"),
    ({"bg_color": None}, "parameter bg_color has no value (quote a value that starts with #"),
    ({"bg_color": "#00ff00", "bg_blur": 31}, "parameters bg_color and bg_blur are both set"),
    ({"outputs": ["background"]}, "output background needs a background: set bg_color, bg_image or bg_blur"),
    ({"bg_color": "green"}, "parameter bg_color: bad color 'green'; use '#RRGGBB' or 'R,G,B'"),
    ({"bg_image": "/nonexistent/bg.png"}, "parameter bg_image: "),
    ({"engine": 3}, "parameter engine must be a string, got 3"),
])
def test_bad_parameter_values_are_refused_with_a_reason(values, fragment):
    with pytest.raises(ParameterError) as info:
        Settings.parse(values).background()  # bg_image is read when the background is made
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_the_newest_frame_is_processed_and_waiting_ones_are_dropped(photos):
    """Frames offered while none is taken replace each other: the newest is processed, the others
    are counted as dropped. Every output is the renderer's image for the engine's mask."""
    settings = Settings(precision="fp32", outputs=("mask", "overlay", "cutout", "background"), bg_color="0,255,0")
    emitted, done = [], threading.Event()

    def emit(name, header, image):
        emitted.append((name, header, image))
        if len(emitted) == len(settings.outputs):
            done.set()

    frames = [photos[name] for name in ("astronaut.png", "coffee.png", "chelsea.png")]
    processor = Processor(settings, emit)
    try:
        for i, frame in enumerate(frames):  # before the worker starts: all three wait in the one slot
            processor.offer(message(encode(frame, "rgb8"), "rgb8", frame_id=f"frame{i}", stamp=(i, i)))
        processor.start()
        assert done.wait(120), "no outputs within 120 s"
        with settings.open_engine() as engine:
            mask = engine(frames[-1])
    finally:
        processor.close()
    stats = processor.stats
    assert (stats.received, stats.processed, stats.dropped) == (3, 1, 2)
    assert [name for name, _, _ in emitted] == list(settings.outputs)
    assert {header.frame_id for _, header, _ in emitted} == {"frame2"}
    background = Background(color=(0, 255, 0))
    for name, _, image in emitted:
        np.testing.assert_array_equal(image, render(frames[-1], mask, Mode(name), background))
    window = stats.window()
    assert window["totals"] == {"received": 3, "processed": 1, "dropped": 2, "skipped": 0, "failed": 0}
    assert window["dropped"] == 2 and window["fps"] > 0 and window["latency_ms"]["p50"] > 0
    assert stats.window()["latency_ms"] is None and stats.window()["dropped"] == 0  # a new window


def test_reconfiguring_reopens_the_engine_only_when_it_must():
    processor = Processor(Settings(precision="fp32"), lambda *args: None)
    try:
        engine = processor.engine
        with pytest.raises(ModelFormatError, match="model file not found: /nonexistent/model.onnx"):
            processor.reconfigure(Settings(engine="/nonexistent/model.onnx"))
        assert processor.settings == Settings(precision="fp32") and processor.engine is engine
        processor.reconfigure(Settings(precision="fp32", smooth=0.6, outputs=("overlay",), max_rate=5))
        assert processor.engine is engine and processor.smoother.strength == 0.6
        assert processor.settings.outputs == ("overlay",)
        processor.reconfigure(Settings(precision="fp32"))
        assert processor.smoother is None
    finally:
        processor.close()


# --- the command ---------------------------------------------------------------------------------------

def without_rclpy(*argv: str) -> subprocess.CompletedProcess:
    code = ("import sys\nsys.modules['rclpy'] = None\n"
            f"from u2edge.cli import main\nsys.exit(main({list(argv)!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_without_rclpy_help_works_and_the_command_says_how_to_install_it():
    help = without_rclpy("ros", "--help")
    assert help.returncode == 0 and "Example" in help.stdout and "--ros-args" in help.stdout
    proc = without_rclpy("ros")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("u2edge: error: u2edge ros needs ROS 2 (rclpy")
    assert "pip install 'u2edge[ros]'" in lines[0] and "source /opt/ros/<distro>/setup.bash" in lines[0]


def require_ros() -> None:
    if importlib.util.find_spec("rclpy") is None:
        pytest.skip("rclpy is not installed: pip install -e '.[ros]' (x86-64 Linux, Python 3.10 to 3.12)")
    require_private_network()


@pytest.mark.parametrize("ros_args, line", [
    (["-p", "outputs:=[mask,bogus]"], "u2edge: error: parameter outputs: 'bogus' is not an output"),
    (["-p", "engine:=/nonexistent/model.onnx"], "u2edge: error: model file not found: /nonexistent/model.onnx"),
    (["-p", "precision:=fp32", "-p", "bg_color:=#00ff00"], "u2edge: error: parameter bg_color has no value"),
])
def test_a_node_that_cannot_start_says_why_in_one_line(ros_args, line):
    require_ros()
    proc = subprocess.run(private_network([sys.executable, "-m", "u2edge", "ros", "--ros-args", *ros_args]),
                          capture_output=True, text=True, env=private_env(), timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [proc.stderr.strip()]
    assert proc.stderr.startswith(line), proc.stderr


# --- a real node, end to end -----------------------------------------------------------------------------

def test_node_round_trip_matches_u2edge_image(tmp_path, photos, photo_paths, official_onnx):
    """bgr8, rgb8, rgba8 and mono8 frames (two with padded rows) through a real node give the masks
    ``u2edge image`` writes for the same photos, with their headers; parameters change at run time
    (bad values refused, qos and outputs applied); /diagnostics counts the frames; SIGTERM stops it."""
    require_ros()  # official_onnx: the weights are fetched now, since the namespace has no network
    by_name = {p.name: p for p in photo_paths}
    gray = tmp_path / "coffee_gray.png"
    cv2.imwrite(str(gray), cv2.cvtColor(photos["coffee.png"], cv2.COLOR_BGR2GRAY))
    cases = [
        {"path": str(by_name["astronaut.png"]), "encoding": "bgr8", "pad": 0},
        {"path": str(by_name["chelsea.png"]), "encoding": "rgb8", "pad": 13},
        {"path": str(gray), "encoding": "mono8", "pad": 5},
        {"path": str(by_name["rocket.jpg"]), "encoding": "rgba8", "pad": 0},
    ]
    for i, case in enumerate(cases):
        case.update(frame_id=f"{case['encoding']}_frame", stamp=[1_700_000_000 + i, 123_456_789 + i])
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    proc = subprocess.run(private_network([sys.executable, str(HELPER), tmp_path / "cases.json", tmp_path]),
                          capture_output=True, text=True, env=private_env(), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr + (tmp_path / "node.log").read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    received = np.load(tmp_path / "results.npz")

    run_cli("image", *[c["path"] for c in cases], "-o", tmp_path / "image", "--precision", "fp32", "-q")
    for case in cases:
        key = f"{case['frame_id']}.mask"
        expected = cv2.imread(str(tmp_path / "image" / f"{Path(case['path']).stem}.png"), cv2.IMREAD_UNCHANGED)
        assert received[key].shape == expected.shape
        assert np.abs(received[key].astype(np.int16) - expected).max() <= 1, case
        assert results["headers"][key] == {"frame_id": case["frame_id"], "stamp": case["stamp"],
                                           "encoding": "mono8", "step": expected.shape[1]}

    refused, applied = results["parameters"][:3], results["parameters"][3:]
    assert [r["successful"] for r in refused] == [False] * 3
    assert "'bogus' is not an output" in refused[0]["reason"]
    assert "parameter qos 'fast' is not one of sensor_data, reliable" in refused[1]["reason"]
    assert "model file not found: /nonexistent/model.onnx" in refused[2]["reason"]
    assert [r["successful"] for r in applied] == [True, True]

    # outputs gained overlay and cutout at run time: all three for the next frame, with its header
    frame = photos["astronaut.png"]
    mask = received["outputs.mask"]
    for topic, encoding in (("mask", "mono8"), ("overlay", "bgr8"), ("cutout", "bgra8")):
        assert results["headers"][f"outputs.{topic}"]["encoding"] == encoding
        assert results["headers"][f"outputs.{topic}"]["stamp"] == [7, 7]
    np.testing.assert_array_equal(received["outputs.cutout"][:, :, :3], frame)
    np.testing.assert_array_equal(received["outputs.cutout"][:, :, 3], mask)
    overlay = render(frame, mask.astype(np.float32) / 255, Mode.OVERLAY)
    assert (np.abs(received["outputs.overlay"].astype(np.int16) - overlay).max(axis=2) > 1).mean() < 0.01

    # /diagnostics: every frame counted (one skipped: a yuv422 frame), none dropped under reliable QoS
    diagnostics = results["diagnostics"]
    last = diagnostics[-1]["values"]
    frames = len(cases) + 1
    assert [last[f"total {k}"] for k in ("received", "processed", "dropped", "skipped", "failed")] == \
        [str(frames + 1), str(frames), "0", "1", "0"]
    assert last["qos"] == "reliable" and last["outputs"] == "mask,overlay,cutout" and "fp32" in last["engine"]
    skipped = [d for d in diagnostics if d["values"]["skipped"] == "1"]
    assert len(skipped) == 1 and skipped[0]["level"] == 1  # WARN, with the reason
    assert skipped[0]["message"] == "frames skipped: image encoding 'yuv422' is not supported; publish bgr8, " \
                                    "rgb8, bgra8, rgba8, mono8 (image_proc or cv_bridge convert others)"
    assert all(d["level"] == 0 for d in diagnostics if d is not skipped[0])
    busy = [d for d in diagnostics if d["values"]["latency p50 ms"]]
    assert busy and all(float(d["values"]["fps"]) > 0 and float(d["values"]["latency p50 ms"]) > 0 for d in busy)
    assert all(d["message"].endswith("0 dropped") for d in busy)

    assert results["returncode"] == 143, results["log"]  # SIGTERM: a clean stop, as every u2edge command
    assert "Traceback" not in results["log"] and results["log"].rstrip().endswith("u2edge: terminated")
    assert "parameter change refused: parameter outputs: 'bogus' is not an output" in results["log"]
    assert results["log"].count("skipping frames: image encoding 'yuv422' is not supported") == 1
