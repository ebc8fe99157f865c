"""The CLI through subprocesses, as a user runs it: outputs, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import PHOTOS, run_cli, small_disk
from u2edge import U2EdgeEngine, read_image


def error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def only_base_dependencies(*argv: str) -> subprocess.CompletedProcess:
    """Run the CLI in a process where torch and onnx cannot be imported."""
    code = ("import sys\nfor m in ('torch', 'onnx', 'tensorrt', 'tensorrt_rtx'): sys.modules[m] = None\n"
            f"from u2edge.cli import main\nsys.exit(main({list(argv)!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_help_works_with_only_base_dependencies():
    top = only_base_dependencies("--help")
    assert top.returncode == 0 and "image" in top.stdout and "export" in top.stdout
    for command in ("image", "export", "build", "eval", "info"):
        proc = only_base_dependencies(command, "--help")
        assert proc.returncode == 0, proc.stderr
        assert "Example" in proc.stdout


def test_unknown_options_are_errors(tmp_path):
    proc = run_cli("image", "x.jpg", "-o", tmp_path, "--no-such-flag", check_rc=2)
    assert "unrecognized arguments: --no-such-flag" in proc.stderr


def test_masks_for_a_folder(tmp_path, photo_paths):
    src = tmp_path / "in"
    src.mkdir()
    for p in photo_paths:
        shutil.copy(p, src)
    proc = run_cli("image", src, "-o", tmp_path / "out", "--json")
    summary = json.loads(proc.stdout)
    assert summary["written"] == len(PHOTOS) and summary["failed"] == 0
    for p in photo_paths:
        out = tmp_path / "out" / f"{p.stem}.png"
        mask = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
        assert mask.ndim == 2 and mask.dtype == np.uint8
        assert mask.shape == cv2.imread(str(p)).shape[:2]
        assert 0.01 < (mask > 127).mean() < 0.95  # the rocket covers 2%
        assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_cutout_and_background_modes(tmp_path, photo_paths, engine, photos):
    astronaut = photo_paths[0]
    run_cli("image", astronaut, "-o", tmp_path / "cut", "--mode", "cutout", "--precision", "fp32")
    cut = cv2.imread(str(tmp_path / "cut" / "astronaut.png"), cv2.IMREAD_UNCHANGED)
    assert cut.shape == (512, 512, 4)
    want = np.rint(engine(photos[astronaut.name]) * 255)
    assert np.abs(cut[:, :, 3].astype(int) - want).max() <= 1
    run_cli("image", astronaut, "-o", tmp_path / "green", "--bg-color", "0,255,0", "--precision", "fp32")
    green = cv2.imread(str(tmp_path / "green" / "astronaut.png"))
    assert green.shape == (512, 512, 3) and (green[cut[:, :, 3] == 0] == (0, 255, 0)).all()
    run_cli("image", astronaut, "-o", tmp_path / "bg", "--bg-image", photo_paths[2])
    run_cli("image", "--bg-blur", "21", astronaut, "-o", tmp_path / "blur")
    assert (tmp_path / "bg" / "astronaut.png").exists() and (tmp_path / "blur" / "astronaut.png").exists()


def test_conflicting_render_options_give_one_line(tmp_path, photo_paths):
    proc = run_cli("image", photo_paths[0], "-o", tmp_path, "--mode", "mask", "--bg-color", "#000000", check_rc=1)
    assert error_lines(proc) == ["u2edge: error: --bg-color/--bg-image/--bg-blur need --mode background, "
                                 "not --mode mask"]
    proc = run_cli("image", photo_paths[0], "-o", tmp_path, "--bg-color", "purple", check_rc=1)
    assert len(error_lines(proc)) == 1 and "bad color 'purple'" in proc.stderr


def test_bad_inputs_are_reported_and_the_rest_processed(tmp_path, photo_paths):
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    text = tmp_path / "notes.png"
    text.write_text("hello")
    proc = run_cli("image", photo_paths[1], corrupt, text, tmp_path / "missing.png", "-o", tmp_path / "out",
                   check_rc=1)
    lines = error_lines(proc)
    assert len(lines) == 3, lines
    assert any("broken.jpg" in line and "not a readable image" in line for line in lines)
    assert any("notes.png" in line and "not a readable image" in line for line in lines)
    assert any("missing.png" in line and "no such file" in line for line in lines)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["chelsea.png"]
    assert "1 written" in proc.stdout and "3 failed" in proc.stdout


def test_a_folder_runs_through_the_pipeline_in_order_past_a_broken_file(tmp_path, photo_paths):
    src = tmp_path / "in"
    src.mkdir()
    for p in photo_paths:
        shutil.copy(p, src)
    (src / "b_broken.png").write_bytes(photo_paths[0].read_bytes()[:3000])  # sorts between two photos
    proc = run_cli("image", src, "-o", tmp_path / "out", "--json", check_rc=1)
    ours = [line for line in error_lines(proc) if line.startswith("u2edge")]  # OpenCV may warn on its own too
    assert ours == [f"u2edge: {src / 'b_broken.png'}: not a readable image (corrupt, empty, or an unsupported "
                    "format)"]
    summary = json.loads(proc.stdout)
    ordered = sorted(src / p.name for p in photo_paths)
    assert [item["input"] for item in summary["images"]] == [str(p) for p in ordered]
    assert [item["output"] for item in summary["images"]] == [str(tmp_path / "out" / f"{p.stem}.png")
                                                              for p in ordered]
    assert summary["written"] == 5 and summary["failed"] == 1 and len(summary["errors"]) == 1
    assert summary["seconds"] > 0 and summary["seconds_per_image"] > 0
    assert all(item["seconds"] > 0 for item in summary["images"])
    # the video pipeline ran it: its frame counts and per-stage times come with the summary
    pipeline = summary["pipeline"]
    assert pipeline["frames"] == {"captured": 5, "processed": 5, "written": 5, "dropped": 0, "corrupt": 1}
    assert pipeline["stop"] == "end of source" and pipeline["error"] is None
    assert set(pipeline["stage_ms"]) == {"capture", "preprocess", "infer", "postprocess", "render", "write"}
    assert all(pipeline["stage_ms"][stage] > 0 for stage in ("capture", "infer", "write"))
    with U2EdgeEngine() as engine:  # the same backend the CLI picks
        for item in summary["images"]:
            frame = read_image(item["input"])
            mask = cv2.imread(item["output"], cv2.IMREAD_UNCHANGED)
            assert (item["height"], item["width"]) == mask.shape == frame.shape[:2]
            assert np.abs(mask.astype(int) - np.rint(engine(frame) * 255)).max() <= 1, item["input"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{p.stem}.png" for p in photo_paths)


def test_inputs_are_never_overwritten(tmp_path, photo_paths):
    photo = tmp_path / "astronaut.png"
    shutil.copy(photo_paths[0], photo)
    before = photo.read_bytes()
    proc = run_cli("image", photo, "-o", tmp_path, check_rc=1)
    assert "refusing to overwrite" in proc.stderr
    assert photo.read_bytes() == before
    (tmp_path / "a").mkdir()
    shutil.copy(photo_paths[0], tmp_path / "a" / "astronaut.jpg")
    proc = run_cli("image", photo, tmp_path / "a" / "astronaut.jpg", "-o", tmp_path / "out", check_rc=1)
    assert "already the output of" in proc.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["astronaut.png"]


def test_export_errors_are_one_line(tmp_path):
    proc = run_cli("export", "--imgsz", "330", "-o", tmp_path / "x.onnx", check_rc=1)
    assert len(error_lines(proc)) == 1 and "multiple of 32" in proc.stderr
    proc = run_cli("export", "--weights", tmp_path / "nope.pth", "-o", tmp_path / "x.onnx", check_rc=1)
    assert error_lines(proc) == [f"u2edge: error: weights file not found: {tmp_path / 'nope.pth'}"]
    assert not (tmp_path / "x.onnx").exists()


def test_export_cli(tmp_path):
    proc = run_cli("export", "--dynamic-batch", "-o", tmp_path / "m.onnx")
    assert "max abs error against the source ONNX" in proc.stdout
    proc = run_cli("image", cv2_sample(tmp_path), "-o", tmp_path / "out", "--engine", tmp_path / "m.onnx")
    assert (tmp_path / "out" / "sample.png").exists()


def cv2_sample(tmp_path):
    path = tmp_path / "sample.jpg"
    import skimage.data

    cv2.imwrite(str(path), skimage.data.coffee()[:, :, ::-1])
    return path


def test_info(tmp_path):
    info = json.loads(run_cli("info", "--json").stdout)
    assert info["onnxruntime"]["version"] and "CPUExecutionProvider" in info["onnxruntime"]["providers"]
    assert set(info["opencv"]) >= {"version", "gstreamer", "v4l2"}
    assert ".onnx" in info["backends"]
    table = run_cli("info").stdout
    assert "onnxruntime" in table and "GStreamer" in table and "tensorrt" in table


@pytest.mark.slow
def test_8000x8000_image_with_bounded_memory(tmp_path, photos):
    big = cv2.resize(photos["astronaut.png"], (8000, 8000), interpolation=cv2.INTER_LINEAR)
    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 80])
    del big
    code = ("import sys\nfrom u2edge.bench.timing import peak_rss_mb\nfrom u2edge.cli import main\n"
            f"rc = main(['image', {str(path)!r}, '-o', {str(tmp_path / 'out')!r}, '--mode', 'cutout', '-q'])\n"
            "print(int(peak_rss_mb()))\nsys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    peak_mib = int(proc.stdout.split()[-1])
    # frame 183 MiB + mask 244 MiB + BGRA 244 MiB + the PNG encoder's buffer + runtime: measured
    # 1.1 GiB. (getrusage's ru_maxrss read 1.55 GiB after other tests: Linux carries the pytest
    # process's peak across exec, so the process's own VmHWM is read.) One more float32 copy of the
    # frame (732 MiB) would cross 2 GiB, and that is what this catches.
    assert peak_mib < 2048, f"peak RSS {peak_mib} MiB"
    out = cv2.imread(str(tmp_path / "out" / "big.png"), cv2.IMREAD_UNCHANGED)
    assert out.shape == (8000, 8000, 4)


def test_full_disk_leaves_nothing_behind(tmp_path, photo_paths):
    with small_disk(tmp_path / "disk", "64k") as disk:
        proc = run_cli("image", photo_paths[0], "-o", disk, "--mode", "cutout", check_rc=1)
        assert error_lines(proc) == [f"u2edge: error: cannot write {disk / 'astronaut.png'}: the disk is full; "
                                     "nothing was left behind"]
        assert list(disk.iterdir()) == []


def test_file_size_limit_leaves_nothing_behind(tmp_path, photo_paths):
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))

    proc = run_cli("image", photo_paths[0], "-o", tmp_path, "--mode", "cutout", check_rc=1, preexec_fn=limit)
    assert len(error_lines(proc)) == 1 and "cannot write" in proc.stderr and "nothing was left behind" in proc.stderr
    assert list(tmp_path.iterdir()) == []


# Holds a write lease on a file: another process's open() of it then waits until the lease is
# released (or the kernel's lease-break-time passes, 45 s by default), and this process is told by
# SIGIO. Single-threaded, so that sigtimedwait takes the SIGIO.
_LEASE = """
import fcntl, os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGIO})
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
except OSError as exc:
    sys.exit(f"no file lease here: {exc}")
print("leased", flush=True)
print("opened" if signal.sigtimedwait({signal.SIGIO}, 300) else "never opened", flush=True)
sys.stdin.readline()
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
"""


@pytest.mark.parametrize("sig, rc, message", [(signal.SIGINT, 130, "u2edge: interrupted"),
                                                (signal.SIGTERM, 143, "u2edge: terminated")])
def test_ctrl_c_and_sigterm_stop_cleanly(tmp_path, photo_paths, sig, rc, message):
    """The signal arrives while the job certainly runs: its last input is leased, so that the CLI's
    open() of it waits, after the photos before it went through, until the signal has been sent."""
    src = tmp_path / "in"
    src.mkdir()
    sizes = {}
    for i in range(12):
        photo = photo_paths[i % len(photo_paths)]
        shutil.copy(photo, src / f"frame{i:02d}{photo.suffix}")
        sizes[f"frame{i:02d}.png"] = cv2.imread(str(photo)).shape[:2]
    last = tmp_path / "last.png"
    shutil.copy(photo_paths[1], last)
    out = tmp_path / "out"
    lease = subprocess.Popen([sys.executable, "-c", _LEASE, str(last)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    if lease.stdout.readline() != "leased\n":
        pytest.skip(f"cannot lease a file in {tmp_path}: {lease.communicate()[1].strip()}")
    with open("/proc/sys/fs/lease-break-time") as f:
        if int(f.read()) < 10:  # the CLI's open() waits this long at most
            lease.communicate("release\n")
            pytest.skip("fs.lease-break-time is under 10 s here: a leased file holds a reader back too briefly")

    def default_sigint():  # a shell's background job starts with SIGINT ignored; a terminal's does not
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen([sys.executable, "-m", "u2edge", "image", str(src), str(last), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    try:
        assert lease.stdout.readline() == "opened\n"  # the CLI now waits in open() of the last input
        proc.send_signal(sig)
    except BaseException:
        proc.kill()
        raise
    finally:
        lease.communicate("release\n")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == rc
    assert [line for line in stderr.splitlines() if line.strip()] == [message]
    # complete masks of photos done before the signal, nothing hidden, and not the last input's
    written = sorted(p.name for p in out.iterdir())
    assert written and set(written) <= set(sizes), written
    for name in written:
        assert cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED).shape == sizes[name], name


def test_gray_rgba_16bit_and_1x1_files(tmp_path, photos):
    frame = photos["coffee.png"]
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "gray.png"), cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(src / "rgba.png"), cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(src / "deep.png"), frame.astype(np.uint16) * 257)
    cv2.imwrite(str(src / "dot.png"), np.full((1, 1, 3), 200, np.uint8))
    run_cli("image", src, "-o", tmp_path / "out")
    out = {p.stem: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in (tmp_path / "out").iterdir()}
    assert sorted(out) == ["deep", "dot", "gray", "rgba"]
    assert out["dot"].shape == (1, 1)
    assert all(out[k].shape == frame.shape[:2] for k in ("gray", "rgba", "deep"))
    assert np.array_equal(out["rgba"], out["deep"])  # same pixels once converted to 8-bit BGR


def test_corrupt_weights_and_models_give_one_line(tmp_path, photo_paths):
    pytest.importorskip("torch", reason="loading a .pth needs PyTorch")
    corrupt = tmp_path / "u2netp.pth"
    corrupt.write_bytes(b"\x80\x02 truncated pickle")
    proc = run_cli("export", "--weights", corrupt, "-o", tmp_path / "x.onnx", check_rc=1)
    assert len(error_lines(proc)) == 1 and "corrupt or not a .pth" in proc.stderr
    bad_onnx = tmp_path / "model.onnx"
    bad_onnx.write_bytes(b"not onnx at all")
    proc = run_cli("image", photo_paths[0], "-o", tmp_path / "out", "--engine", bad_onnx, check_rc=1)
    assert len(error_lines(proc)) == 1 and "corrupt or not an ONNX model" in proc.stderr
    proc = run_cli("image", photo_paths[0], "-o", tmp_path / "out", "--engine", tmp_path / "m.tflite", check_rc=1)
    assert len(error_lines(proc)) == 1 and "no backend for '.tflite' files" in proc.stderr


def test_exif_orientation_is_followed(tmp_path, photos):
    from PIL import Image

    from u2edge.images import read_image

    frame = photos["coffee.png"]  # 400 x 600
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    Image.fromarray(np.ascontiguousarray(frame[:, :, ::-1])).save(path, exif=exif, quality=95)
    assert read_image(path).shape == (600, 400, 3)
    run_cli("image", path, "-o", tmp_path / "out")
    assert cv2.imread(str(tmp_path / "out" / "phone.png"), cv2.IMREAD_UNCHANGED).shape == (600, 400)
