"""``u2edge batch`` on Ray Data, for real: real photos and a corrupt file through a private local Ray
(with an actor that really crashes once) and through a loopback ``ray start --head`` cluster, in
private network and PID namespaces (tests/batch_scenario.py); the masks are held to ``u2edge image``'s.
The pool's sizing and the actors' own code are checked without Ray."""

from __future__ import annotations

import importlib.util
import json
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import PHOTOS, run_cli
from netns import private_env, private_network, require_private_network
from u2edge.batch import MaskWriter, Pool, check_python, plan_pool
from u2edge.errors import U2EdgeError

SCENARIO = Path(__file__).with_name("batch_scenario.py")
NAMES = (*PHOTOS, "camera.png")  # camera.png is gray: read as BGR like the others
BROKEN = "broken.png"  # a PNG cut short: not a readable image
CRASH_ON = "chelsea.png"  # the actor dies the first time it is about to write this one's mask
PORT = 6379  # the namespace is private: the port is ours
UNREACHABLE = 6390


@pytest.fixture(scope="module")
def inputs(photo_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("batch_in")
    for name in NAMES:
        shutil.copy(photo_dir / name, folder / name)
    (folder / BROKEN).write_bytes((photo_dir / "coffee.png").read_bytes()[:3000])
    return folder


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> dict[str, np.ndarray]:
    """``u2edge image``'s masks of the same inputs, with the same (default) options, by output name."""
    out = tmp_path_factory.mktemp("batch_reference")
    run_cli("image", inputs, "-o", out, "-q", check_rc=1)  # 1: the broken file
    return {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in out.iterdir()}


def ray_ready() -> None:
    """Skip, saying why, unless Ray can run here, in private network and PID namespaces."""
    if sys.version_info < (3, 10) or importlib.util.find_spec("ray") is None:
        pytest.skip("u2edge batch needs Ray Data, on Python 3.10+: pip install -e '.[ray]'")
    require_private_network()
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a private PID namespace here (needs root): {probe.stderr.strip()}")


@pytest.fixture(scope="module")
def scenario(inputs, reference, tmp_path_factory) -> dict:
    """One run of tests/batch_scenario.py: u2edge batch on a private local Ray with an actor that
    crashes once; ray start --head on loopback; u2edge batch through --address; ray stop. After
    ``reference``: the namespace has no network, so the weights (and the model auto picks) must be
    in the cache already."""
    ray_ready()
    work = tmp_path_factory.mktemp("batch_scenario")
    batch = [sys.executable, "-m", "u2edge", "batch", str(inputs)]
    ray = str(Path(sys.executable).with_name("ray"))
    spec = {"deadline": 240, "steps": [
        {"name": "unreachable", "argv": [*batch, "-o", str(work / "unused"), "--address", f"127.0.0.1:{UNREACHABLE}"]},
        {"name": "local", "argv": [*batch, "-o", str(work / "local"), "--batch-size", "2", "--json"],
         "env": {"U2EDGE_BATCH_CRASH_ONCE": f"{CRASH_ON}:{work / 'crashed'}"}},
        {"name": "start", "argv": [ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={PORT}",
                                   "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"]},
        {"name": "cluster", "argv": [*batch, "-o", str(work / "cluster"), "--address", f"127.0.0.1:{PORT}", "--json"]},
    ], "finally": [{"name": "stop", "argv": [ray, "stop"]}]}
    (work / "spec.json").write_text(json.dumps(spec))
    # one token for the cluster and its drivers, so that nothing is read from or written to ~/.ray
    env = private_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    argv = ["unshare", "--pid", "--fork", "--mount-proc",
            *private_network([sys.executable, SCENARIO, work / "spec.json", work / "record.json"])]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=330, check=False)
    assert proc.returncode == 0, f"the scenario driver failed:\n{proc.stdout}\n{proc.stderr}"
    result = json.loads((work / "record.json").read_text())
    assert result["failure"] is None, f"{result['failure']}:\n{json.dumps(result, indent=1)}"
    return {"work": work, **result["steps"]}


def summary(step: dict) -> dict:
    return json.loads("\n".join(step["stdout"]))


def u2edge_lines(step: dict) -> list[str]:
    return [line for line in step["stderr"] if line.startswith("u2edge:")]


@pytest.mark.slow
def test_masks_equal_u2edge_image(scenario, reference):
    assert sorted(reference) == sorted(f"{Path(n).stem}.png" for n in NAMES)
    for run in ("local", "cluster"):
        for name, expected in reference.items():
            got = cv2.imread(str(scenario["work"] / run / name), cv2.IMREAD_UNCHANGED)
            assert got is not None, f"{run}: {name} was not written"
            assert got.shape == expected.shape and got.dtype == np.uint8, (run, name, got.shape, expected.shape)
            diff = int(np.abs(got.astype(np.int16) - expected).max())
            assert diff <= 1, f"{run}: {name} differs from u2edge image's mask by {diff}/255"


@pytest.mark.slow
def test_a_corrupt_file_is_reported_on_its_own_row(scenario, inputs):
    step = scenario["local"]
    assert step["returncode"] == 1, step["stderr"]
    result = summary(step)
    broken = str(inputs / BROKEN)
    line = f"{broken}: not a readable image (corrupt, empty, or an unsupported format)"
    assert {row["input"]: row["status"] for row in result["status"]} == \
        {**{str(inputs / n): "ok" for n in NAMES}, broken: line}
    assert (result["written"], result["failed"], result["errors"]) == (len(NAMES), 1, [line])
    assert u2edge_lines(step) == [f"u2edge: {line}"]
    assert not (scenario["work"] / "local" / BROKEN).exists()


@pytest.mark.slow
def test_names_are_kept(scenario, inputs):
    result = summary(scenario["local"])
    expected = {str(inputs / n): str(scenario["work"] / "local" / f"{Path(n).stem}.png") for n in NAMES}
    assert {item["input"]: item["output"] for item in result["images"]} == expected
    # exactly those files: no temp file left by the actor that died in the middle of its batch
    assert sorted(p.name for p in (scenario["work"] / "local").iterdir()) == sorted(Path(p).name
                                                                                 for p in expected.values())


@pytest.mark.slow
def test_a_crashed_actor_is_retried(scenario, inputs):
    assert (scenario["work"] / "crashed").exists(), "the actor never reached the file it was to crash on"
    result = summary(scenario["local"])
    pids = {Path(row["input"]).name: row["pid"] for row in result["status"]}
    # a real crash: the batch holding CRASH_ON was written by another actor process than the first batch's
    assert pids[CRASH_ON] != pids[NAMES[0]], pids
    assert result["written"] == len(NAMES) and all(pids.values())


@pytest.mark.slow
def test_a_ray_start_cluster_through_address(scenario):
    assert scenario["start"]["returncode"] == 0, scenario["start"]["stderr"]
    step = scenario["cluster"]
    assert step["returncode"] == 1, step["stderr"]  # the broken file
    result = summary(step)
    assert result["ray"]["address"] == f"127.0.0.1:{PORT}"
    assert (result["written"], result["failed"]) == (len(NAMES), 1)
    stop = scenario["stop"]
    assert stop["returncode"] == 0 and "Stopped" in "\n".join(stop["stdout"] + stop["stderr"]), stop


@pytest.mark.slow
def test_an_unreachable_cluster_is_one_line(scenario):
    step = scenario["unreachable"]
    assert step["returncode"] == 1
    assert [line for line in step["stderr"] if line.strip()] == [
        f"u2edge: error: cannot reach a Ray cluster at --address 127.0.0.1:{UNREACHABLE} (nothing answers on "
        f"127.0.0.1:{UNREACHABLE}: Connection refused); start one with: ray start --head, or drop --address for "
        "a private Ray on this machine; a cluster with token authentication (Ray 2.60 turns it on where "
        "~/.ray/auth_token exists) also needs RAY_AUTH_MODE=token here"]


# --- without Ray --------------------------------------------------------------------------------------

def test_pool_leaves_a_cpu_and_shares_out_the_others():
    assert plan_pool([{"CPU": 2}]) == Pool(1, 1, 0, 8)  # on 2 CPUs: one actor, one CPU left
    assert plan_pool([{"CPU": 16}]) == Pool(15, 1, 0, 8)
    assert plan_pool([{"CPU": 16}], actors=3, batch_size=4) == Pool(3, 5, 0, 4)
    assert plan_pool([{"CPU": 8}, {"CPU": 8}], actors=1) == Pool(1, 8, 0, 8)  # no more than a node has
    assert plan_pool([{"CPU": 2}], actors=4) == Pool(4, 1, 0, 8, fits=False)  # started as they fit


def test_pool_on_gpus():
    nodes = [{"CPU": 8, "GPU": 2}, {"CPU": 8, "GPU": 2}]
    assert plan_pool(nodes, gpus_per_actor=1) == Pool(4, 1, 1, 8)
    assert plan_pool(nodes, gpus_per_actor=0.5) == Pool(8, 1, 0.5, 8)
    assert plan_pool(nodes, gpus_per_actor=1, actors=6) == Pool(6, 1, 1, 8, fits=False)
    with pytest.raises(U2EdgeError) as info:
        plan_pool(nodes, gpus_per_actor=4)
    assert info.value.message(lambda name: f"--{name.replace('_', '-')}") == (
        "--gpus-per-actor 4: no node of the Ray cluster has that many GPUs (the most is 2); give at most 2, or "
        "drop --gpus-per-actor to run on CPUs")
    with pytest.raises(U2EdgeError, match="has that many GPUs"):
        plan_pool([{"CPU": 8}], gpus_per_actor=1)


@pytest.mark.parametrize("options, message", [
    ({"actors": 0}, "actors 0 must be at least 1"),
    ({"gpus_per_actor": -1}, "gpus_per_actor -1 must be 0 (CPUs) or more"),
    ({"batch_size": 0}, "batch_size 0 must be at least 1"),
])
def test_pool_options_are_checked(options, message):
    with pytest.raises(U2EdgeError) as info:
        plan_pool([{"CPU": 4}], **options)
    assert str(info.value) == message


def test_python_before_3_10_is_one_line():
    with pytest.raises(U2EdgeError) as info:
        check_python((3, 8))
    assert str(info.value) == ("u2edge batch runs on Ray Data, which needs Python 3.10+ (this is 3.8; JetPack 5 has "
                               "3.8); on one machine use u2edge image INPUT... -o OUTDIR, which runs the same model "
                               "with the same options")
    check_python((3, 10))


def batch_of(paths: list[Path], outdir: Path) -> dict[str, np.ndarray]:
    return {"index": np.arange(len(paths)), "input": np.array([str(p) for p in paths], object),
            "output": np.array([str(outdir / f"{p.stem}.png") for p in paths], object)}


def test_the_actor_writes_masks_and_one_row_per_input(inputs, reference, tmp_path):
    """The actors' own code, in this process: real engine, real photos, a corrupt file."""
    writer = MaskWriter({"path": None, "model": None, "precision": "auto"}, threads=1)
    paths = [inputs / NAMES[0], inputs / BROKEN, inputs / "camera.png"]
    rows = writer(batch_of(paths, tmp_path))
    assert list(rows["error"]) == ["", f"{paths[1]}: not a readable image (corrupt, empty, or an unsupported format)",
                                   ""]
    assert not rows["fatal"].any()
    assert [tuple(hw) for hw in zip(rows["height"], rows["width"])] == [(512, 512), (0, 0), (512, 512)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["astronaut.png", "camera.png"]
    for name in ("astronaut.png", "camera.png"):
        got = cv2.imread(str(tmp_path / name), cv2.IMREAD_UNCHANGED)
        assert int(np.abs(got.astype(np.int16) - reference[name]).max()) <= 1, name


def test_an_engine_that_cannot_open_fails_every_row_as_fatal(inputs, tmp_path):
    writer = MaskWriter({"path": str(tmp_path / "missing.onnx")}, flags={"engine": "--engine"})
    rows = writer(batch_of([inputs / NAMES[0]], tmp_path))
    assert rows["fatal"].all() and list(rows["error"]) == [f"model file not found: {tmp_path / 'missing.onnx'}"]
    assert not list(tmp_path.glob("*.png"))
