"""Triton end to end: ``u2edge triton repo --python-network`` + ``u2edge triton serve`` (the server that
nvidia-pytriton bundles) + ``triton://`` and ``triton+http://`` engines, on real photos, inside a private
network namespace (tests/netns.py, driven by tests/triton_scenario.py). The masks are held to local
ones; a live pipeline's requests in flight, and every error's one line, are checked too."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import run_cli
from netns import private_env, private_network, require_private_network
from u2edge import U2EdgeEngine
from u2edge.backends import choose
from u2edge.backends.triton import TritonAddress
from u2edge.errors import ModelFormatError, U2EdgeError

HERE = Path(__file__).parent
SCENARIO = HERE / "triton_scenario.py"
ROOT = HERE.parent
GRPC, HTTP = "triton://127.0.0.1:8001/u2edge", "triton+http://127.0.0.1:8000/u2edge"  # the namespace's ports are ours
ONE_LEVEL = 1 / 255  # an 8-bit mask's step


def error_lines(stderr) -> list[str]:
    lines = stderr if isinstance(stderr, list) else stderr.splitlines()
    return [line for line in lines if line.strip()]


# --- addresses, without a server --------------------------------------------------------------------
@pytest.mark.parametrize("uri, expected", [
    ("triton://127.0.0.1:8001/u2edge", ("grpc", "127.0.0.1", 8001, "u2edge", "")),
    ("triton+http://gpu-box:9000/u2edge/2", ("http", "gpu-box", 9000, "u2edge", "2")),
    ("triton://gpu-box", ("grpc", "gpu-box", 8001, "u2edge", "")),
    ("TRITON+HTTP://[::1]/seg", ("http", "::1", 8000, "seg", "")),
])
def test_addresses_name_protocol_host_port_and_model(uri, expected):
    address = TritonAddress.parse(uri)
    assert (address.protocol, address.host, address.port, address.model, address.version) == expected
    assert choose(uri) == "triton"


@pytest.mark.parametrize("uri, fragment", [
    ("triton://127.0.0.1:99999/u2edge", "port is not a number"),
    ("triton:///u2edge", "is not a Triton address"),
    ("triton://host:8001/a/b/c", "is not a Triton address"),
    ("triton://host:8001/u2edge?timeout=5", "is not a Triton address"),
])
def test_a_bad_address_is_one_line(uri, fragment):
    with pytest.raises(ModelFormatError, match=fragment) as info:
        U2EdgeEngine(uri)
    assert "triton://HOST:PORT/MODEL" in str(info.value) and "\n" not in str(info.value)


def test_other_addresses_and_backends_are_refused():
    with pytest.raises(ModelFormatError, match=r"no backend for http:// addresses.*triton://HOST:PORT/MODEL"):
        U2EdgeEngine("http://127.0.0.1:8000/u2edge")
    with pytest.raises(ModelFormatError, match="a server's address runs on 'triton'"):
        U2EdgeEngine(GRPC, backend="onnxruntime")


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_a_server_runs_its_repositorys_precision(precision):
    with pytest.raises(U2EdgeError, match=f"precision of the repository.*triton repo --precision {precision}"):
        U2EdgeEngine(GRPC, precision=precision)


def _without(modules: list[str], code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    blocked = "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    return subprocess.run([sys.executable, "-c", f"import sys\n{blocked}{code}"], capture_output=True, text=True,
                          env=env)


def test_without_tritonclient_a_triton_engine_says_how_to_install_it(photo_paths, tmp_path):
    argv = ["image", str(photo_paths[0]), "-o", str(tmp_path / "out"), "--engine", GRPC]
    proc = _without(["tritonclient"], f"from u2edge.cli import main\nsys.exit(main({argv!r}))")
    assert proc.returncode == 1
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("u2edge: error: tritonclient is required for triton:// models")
    assert lines[0].endswith("install it with: pip install 'u2edge[triton]'")


def test_without_any_tritonserver_serve_says_how_to_install_one(tmp_path):
    (tmp_path / "repo" / "m").mkdir(parents=True)
    (tmp_path / "repo" / "m" / "config.pbtxt").write_text('name: "m"\n')
    env = private_env(PATH=str(Path(sys.executable).parent))  # this Python's bin holds no tritonserver
    proc = _without(["pytriton"], f"from u2edge.cli import main\nsys.exit(main(['triton', 'serve', "
                                  f"{str(tmp_path / 'repo')!r}]))", env=env)
    assert proc.returncode == 1, proc.stderr
    assert error_lines(proc.stderr) == [
        "u2edge: error: no tritonserver: none on PATH and nvidia-pytriton is not installed; install it with: "
        "pip install 'u2edge[triton]' (Linux x86-64 and aarch64), or run in NVIDIA's tritonserver container "
        "(nvcr.io/nvidia/tritonserver)"]


@pytest.mark.parametrize("setup, args, line", [
    (None, [], "model repository {repo} is not a folder; write one with: u2edge triton repo -o {repo}"),
    ("folder", [], "model repository {repo} holds no model (no */config.pbtxt); write one with: "
                   "u2edge triton repo -o {repo}"),
    ("model", ["--http-port", "9000", "--grpc-port", "9000"],
     "--http-port and --grpc-port are both 9000; give two different ports"),
])
def test_serve_refuses_what_it_cannot_serve_before_starting(tmp_path, setup, args, line):
    repo = tmp_path / "repo"
    if setup:
        repo.mkdir()
    if setup == "model":
        (repo / "m").mkdir()
        (repo / "m" / "config.pbtxt").write_text('name: "m"\n')
    proc = run_cli("triton", "serve", repo, *args, check_rc=1)
    assert error_lines(proc.stderr) == ["u2edge: error: " + line.format(repo=repo)]


# --- a real server in a private network namespace ---------------------------------------------------
def server_python() -> str:
    """The Python whose u2edge serves: the Triton environment's (``make test`` builds .venv-triton, where
    pytriton's numpy<2 pin holds), else this one."""
    venv = os.environ.get("U2EDGE_TRITON_VENV")
    if venv:
        python = (ROOT / venv if not Path(venv).is_absolute() else Path(venv)) / "bin" / "python"
        if python.exists():
            return str(python)
    return sys.executable


def scenario(tmp_path: Path, steps: list[dict], deadline: float = 150) -> dict:
    """Run tests/triton_scenario.py in a private network namespace; the record of every step."""
    spec, record = tmp_path / "spec.json", tmp_path / "record.json"
    spec.write_text(json.dumps({"steps": steps, "deadline": deadline}, default=str))
    proc = subprocess.run(private_network([sys.executable, SCENARIO, spec, record]),
                          env=private_env(U2EDGE_SERVER_PYTHON=server_python()),
                          capture_output=True, text=True, timeout=deadline + 60, check=False)
    assert proc.returncode == 0, f"the scenario driver failed:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr  # the engines in the driver: their errors are one line
    result = json.loads(record.read_text())
    assert result["failure"] is None, f"{result['failure']}:\n{json.dumps(result, indent=1)}"
    return result["steps"]


@pytest.fixture(scope="module")
def triton_repo(tmp_path_factory) -> Path:
    """A --python-network repository of U2-NetP FP32: what `u2edge image --precision fp32` runs."""
    require_private_network()
    pytest.importorskip("tritonclient.grpc", reason="the Triton client: pip install 'u2edge[triton]'")
    probe = subprocess.run([server_python(), "-c", "from u2edge.triton.server import find_tritonserver\n"
                            "find_tritonserver()"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:  # its one line: no tritonserver on PATH, and pytriton is not installed
        pytest.skip(f"{server_python()}: {probe.stderr.strip().splitlines()[-1]} (make test builds .venv-triton)")
    repo = tmp_path_factory.mktemp("triton") / "repo"
    run_cli("triton", "repo", "-o", repo, "--python-network", "--precision", "fp32")
    return repo


@pytest.fixture(scope="module")
def served(triton_repo, photo_paths, tmp_path_factory) -> tuple[dict, Path]:
    """One server, and every client step against it (and one before it starts)."""
    tmp = tmp_path_factory.mktemp("served")
    photos = tmp / "photos"  # the five photos, of five sizes, as a folder for u2edge video
    photos.mkdir()
    for path in photo_paths:
        (photos / path.name).symlink_to(path)
    image = ["u2edge", "image", "--precision", "fp32", "--engine"]
    steps = [
        {"name": "down", "run": [*image, GRPC, photo_paths[0], "-o", tmp / "down"]},
        {"name": "server", "start": ["u2edge-server", "triton", "serve", triton_repo], "ready": "serving "},
        {"name": "listening", "run": ["ss", "-ltnH"]},
        {"name": "busy", "run": ["u2edge-server", "triton", "serve", triton_repo, "--grpc-port", 9001]},
        {"name": "image", "run": [*image, GRPC, *photo_paths, "-o", tmp / "image", "--json"]},
        {"name": "http", "engine": HTTP, "options": {"precision": "fp32"}, "images": photo_paths,
         "masks": tmp / "http.npz"},
        {"name": "video", "run": ["u2edge", "video", photos, "-o", "null", "--engine", GRPC, "-v", "--json"]},
        {"name": "missing", "run": [*image, GRPC.replace("u2edge", "u2net_human_seg"), photo_paths[0],
                                    "-o", tmp / "missing"]},
        {"name": "timeout", "engine": GRPC, "options": {"timeout": 0.001}, "images": photo_paths[:1]},
        {"name": "not_frames", "engine": GRPC.replace("u2edge", "u2edge_pre")},
        {"name": "http_timeout", "engine": HTTP, "options": {"timeout": 0.001}, "images": photo_paths[:1]},
        {"name": "bench", "run": ["u2edge", "bench", "--model", "u2netp", "--engine", GRPC, "--no-peers",
                                  "--images", *photo_paths[:2], "--repeats", 1, "--json-out", tmp / "bench.json"]},
        {"name": "stop", "stop": "server", "signal": "SIGTERM"},
    ]
    return scenario(tmp, steps), tmp




@pytest.mark.slow
def test_serve_prints_one_line_once_every_model_is_ready(served, triton_repo):
    steps, _ = served
    assert steps["server"]["stdout"] == [
        f"serving {triton_repo} on grpc 127.0.0.1:8001, http 127.0.0.1:8000: "
        "models u2edge, u2edge_network, u2edge_post, u2edge_pre"]


@pytest.mark.slow
def test_the_server_listens_on_its_two_ports_of_127_0_0_1_only(served):
    listening = served[0]["listening"]
    assert listening["returncode"] == 0, listening["stderr"]
    addresses = {line.split()[3] for line in listening["stdout"]}  # metrics (8002) are off
    assert addresses == {"127.0.0.1:8000", "[::ffff:127.0.0.1]:8001"}, listening["stdout"]


@pytest.mark.slow
def test_a_port_in_use_is_one_line(served, triton_repo):
    busy = served[0]["busy"]
    assert busy["returncode"] == 1 and busy["stdout"] == []
    assert error_lines(busy["stderr"]) == [
        f"u2edge: error: tritonserver exited with code 1 serving {triton_repo}: failed to start HTTP service: "
        "Unavailable - Socket '127.0.0.1:8000' already in use; stop the server on it, or give other ports "
        "(--http-port, --grpc-port)"]


@pytest.mark.slow
def test_masks_through_triton_equal_local_ones(served, photo_paths, tmp_path):
    steps, tmp = served
    image = steps["image"]
    assert image["returncode"] == 0, image["stderr"]
    summary = json.loads("\n".join(image["stdout"]))
    assert summary["written"] == len(photo_paths) and summary["failed"] == 0
    run_cli("image", *photo_paths, "-o", tmp_path / "local", "--precision", "fp32")
    for path in photo_paths:
        name = f"{path.stem}.png"
        remote = cv2.imread(str(tmp / "image" / name), cv2.IMREAD_UNCHANGED)
        local = cv2.imread(str(tmp_path / "local" / name), cv2.IMREAD_UNCHANGED)
        assert remote.shape == local.shape == cv2.imread(str(path)).shape[:2]
        assert np.abs(remote.astype(int) - local.astype(int)).max() <= 1, name


@pytest.fixture(scope="module")
def local_masks(photos, photo_paths) -> list[np.ndarray]:
    with U2EdgeEngine(precision="fp32") as engine:
        return [engine(photos[path.name]) for path in photo_paths]


@pytest.mark.slow
def test_an_http_engine_masks_frames_of_mixed_sizes(served, photo_paths, local_masks):
    steps, tmp = served
    http = steps["http"]
    assert http["error"] is None, http["error"]
    assert http["describe"].startswith("triton (HTTP 127.0.0.1:8000, tritonserver ")
    assert len({mask.shape for mask in local_masks}) == len(photo_paths)  # five sizes
    with np.load(tmp / "http.npz") as saved:
        remote = [saved[f"arr_{i}"] for i in range(len(photo_paths))]
    for got, want in zip(remote, local_masks):
        assert got.dtype == np.float32 and got.shape == want.shape
        assert np.abs(got - want).max() <= ONE_LEVEL
    assert http["requests"] == len(photo_paths)


@pytest.mark.slow
def test_a_live_pipeline_keeps_two_requests_in_flight(served, photo_paths):
    video = served[0]["video"]
    assert video["returncode"] == 0, video["stderr"]
    summary = json.loads("\n".join(video["stdout"]))
    assert summary["frames"]["written"] == len(photo_paths)
    counts = [re.search(r"(\d+) requests, up to (\d+) in flight at once", line) for line in video["stderr"]]
    counts = [tuple(map(int, m.groups())) for m in counts if m]
    assert len(counts) == 1, video["stderr"]
    requests, peak = counts[0]
    assert requests == len(photo_paths) and peak >= 2


@pytest.mark.slow
def test_bench_measures_the_servers_model_beside_the_local_rows(served):
    steps, tmp = served
    assert steps["bench"]["returncode"] == 0, steps["bench"]["stderr"]
    rows = {row["name"]: row for row in json.loads((tmp / "bench.json").read_text())["rows"]}
    served_row = rows[f"u2edge u2netp triton ({GRPC})"]
    assert served_row["path"] == GRPC and served_row["model_mb"] is None
    assert served_row["describe"].startswith("triton (GRPC 127.0.0.1:8001")
    # the repository serves U2-NetP FP32 on the CPU: the reference's masks, to float rounding
    assert served_row["accuracy"]["min_iou"] > 0.999 and served_row["accuracy"]["mean_mae"] < 1e-3
    assert served_row["inference"]["images_per_s"] > 0


@pytest.mark.slow
def test_no_server_a_missing_model_and_a_timeout_are_one_line_each(served):
    steps, _ = served
    down, missing = steps["down"], steps["missing"]
    assert down["returncode"] == 1 and error_lines(down["stderr"]) == [
        f"u2edge: error: {GRPC}: no server answers (connection refused); start one with: u2edge triton serve REPO"]
    assert missing["returncode"] == 1 and error_lines(missing["stderr"]) == [
        "u2edge: error: triton://127.0.0.1:8001/u2net_human_seg: the server has no model 'u2net_human_seg' (it "
        "serves u2edge, u2edge_network, u2edge_post, u2edge_pre); name one of those, or write a repository with: "
        "u2edge triton repo -o REPO"]
    for uri, name in ((GRPC, "timeout"), (HTTP, "http_timeout")):
        assert steps[name]["error_type"] == "TritonError"
        assert steps[name]["error"] == (f"{uri}: no answer within 0.001 s; the server is busy or stuck: raise "
                                        "timeout, or serve more instances (u2edge triton repo --instances N)")


@pytest.mark.slow
def test_a_model_that_does_not_take_frames_is_one_line(served):
    not_frames = served[0]["not_frames"]
    assert not_frames["error_type"] == "ModelFormatError"
    assert not_frames["error"].startswith("triton://127.0.0.1:8001/u2edge_pre: model 'u2edge_pre' takes [('FRAME', "
                                          "'UINT8', ['-1', '-1', '3'])] and returns [('NETWORK_INPUT', 'FP32',")
    assert not_frames["error"].endswith("u2edge sends one UINT8 HxWx3 frame and reads one FP32 HxW mask: serve the "
                                        "ensemble 'u2edge' of u2edge triton repo")


@pytest.mark.slow
def test_sigterm_stops_the_server_cleanly(served):
    server = served[0]["server"]
    assert server["returncode"] == 143
    assert server["stderr"][-3:] == ["u2edge: stopping tritonserver", "u2edge: tritonserver stopped (exit code 0)",
                                     "u2edge: terminated"]


@pytest.mark.slow
def test_a_model_that_fails_to_load_is_one_line(triton_repo, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(triton_repo, broken)
    (broken / "u2edge_network" / "1" / "model.onnx").write_bytes(b"not an ONNX model")
    steps = scenario(tmp_path, [{"name": "serve", "run": ["u2edge-server", "triton", "serve", broken]}])
    serve = steps["serve"]
    assert serve["returncode"] == 1 and serve["stdout"] == []
    lines = error_lines(serve["stderr"])
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"u2edge: error: model u2edge_network in {broken} failed to load: ")
    assert "model.onnx" in lines[0] and "not ready either: u2edge" in lines[0]
