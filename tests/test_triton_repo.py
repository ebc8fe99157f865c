"""``u2edge triton repo``: real repositories from TensorRT-RTX plans, the official ONNX and the CPU
model that ``u2edge image`` runs. Every config.pbtxt is parsed into Triton's own ``ModelConfig``
(from tritonclient) and its meaning checked, the ensemble wired as Triton validates it; the Python
models' steps run on real photos against ``U2EdgeEngine``; and the bad inputs give one line.
Serving the repositories for real is tests/test_triton.py's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, small_disk
from u2edge import U2EdgeEngine
from u2edge.cli import build_parser, main
from u2edge.errors import OutputError
from u2edge.sidecar import Sidecar
from u2edge.triton import steps
from u2edge.triton.repo import MODEL_SOURCES, RepoOptions, write_repo

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="the Triton client checks the configs: pip install -e '.[triton]'")
from google.protobuf import json_format, text_format  # noqa: E402  (protobuf comes with tritonclient)

ModelConfig = model_config_pb2.ModelConfig
MODELS = {"u2edge", "u2edge_pre", "u2edge_network", "u2edge_post"}
PYTHON_MODELS = ("u2edge_pre", "u2edge_post")


# --- helpers ---------------------------------------------------------------------------------------
def configs(repo: Path) -> dict[str, ModelConfig]:
    """Every model's config.pbtxt, parsed by protobuf into Triton's ModelConfig (an unknown field,
    a wrong type or a bad enum value fails here)."""
    found = {}
    for path in sorted(repo.glob("*/config.pbtxt")):
        found[path.parent.name] = text_format.Parse(path.read_text(), ModelConfig())
        assert found[path.parent.name].name == path.parent.name
        assert (path.parent / "1").is_dir()  # every model has its version folder, the ensemble's empty
    assert set(found) == MODELS
    assert not list((repo / "u2edge" / "1").iterdir())
    return found


def as_json(config: ModelConfig) -> dict:
    """The config as Triton hands it to a Python model (``args["model_config"]``)."""
    return json.loads(json_format.MessageToJson(config, preserving_proto_field_name=True))


def _dims_match(a, b) -> bool:
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b))


def check_wiring(found: dict[str, ModelConfig]) -> None:
    """The ensemble's steps as Triton's ensemble validation checks them: each step's inputs all
    mapped from tensors made before, outputs that exist, and every tensor's data type and dims
    consistent between the models that share it (dims, or dims with the batch where one model
    batches and the other does not)."""
    ensemble = found["u2edge"]
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 0

    def node(config, tensor):
        dims = list(tensor.dims)
        return tensor.data_type, dims, ([-1] + dims if config.max_batch_size else dims)

    def consistent(a, b, what):
        assert a[0] == b[0], f"{what}: data types differ"
        assert _dims_match(a[1], b[1]) or _dims_match(a[2], b[2]), f"{what}: dims {a[2]} and {b[2]}"

    tensors = {t.name: node(ensemble, t) for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = found[step.model_name]
        inputs = {t.name: t for t in model.input}
        assert set(step.input_map) == set(inputs), f"{step.model_name}: every input mapped once"
        for key, value in step.input_map.items():
            consistent(tensors[value], node(model, inputs[key]), f"{step.model_name}.{key}")
        outputs = {t.name: t for t in model.output}
        for key, value in step.output_map.items():
            assert value not in tensors, f"{value} made twice"
            tensors[value] = node(model, outputs[key])
    for tensor in ensemble.output:
        consistent(tensors[tensor.name], node(ensemble, tensor), f"ensemble output {tensor.name}")


def check_repo(repo: Path, network_file: Path) -> dict[str, ModelConfig]:
    """What every repository has: the four configs, the ensemble FRAME -> MASK wired through the
    network, the Python models' sources, and the network's file copied as it is."""
    found = configs(repo)
    check_wiring(found)
    ensemble = found["u2edge"]
    [frame], [mask] = ensemble.input, ensemble.output
    assert (frame.name, frame.data_type, list(frame.dims)) == ("FRAME", model_config_pb2.TYPE_UINT8, [-1, -1, 3])
    assert (mask.name, list(mask.dims)) == ("MASK", [-1, -1]) and mask.data_type == model_config_pb2.TYPE_FP32
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["u2edge_pre", "u2edge_network",
                                                                         "u2edge_post"]
    for name in PYTHON_MODELS:
        config = found[name]
        assert config.backend == "python" and config.max_batch_size == 0 and not config.HasField("dynamic_batching")
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
        assert (repo / name / "1" / "model.py").read_bytes() == (MODEL_SOURCES / f"{name}.py").read_bytes()
    network = found["u2edge_network"]
    copied = repo / "u2edge_network" / "1" / ("model.plan" if network.platform == "tensorrt_plan" else "model.onnx")
    assert copied.read_bytes() == network_file.read_bytes()
    pre, post = found["u2edge_pre"], found["u2edge_post"]
    params = {k: v.string_value for k, v in pre.parameters.items()}
    assert params == {"u2edge.imgsz": "320", "u2edge.mean": "0.485,0.456,0.406", "u2edge.std": "0.229,0.224,0.225",
                      "u2edge.max_normalize": "1", "u2edge.channel_order": "RGB"}
    assert [t.name for t in pre.output] == ["NETWORK_INPUT", "SIZE"] and list(pre.output[1].dims) == [2]
    assert [t.name for t in post.input] == ["NETWORK_OUTPUT", "SIZE"]
    assert [t.name for t in post.output] == ["MASK"]
    return found


def repo_of(tmp_path: Path, name: str = "repo", **options) -> tuple[Path, dict[str, ModelConfig]]:
    repo = tmp_path / name
    write_repo(RepoOptions(output=repo, **options))
    return repo, configs(repo)


def cli_error(capsys, *argv) -> str:
    """Run the CLI in this process; it must fail with exactly one line."""
    assert main([str(a) for a in argv]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("u2edge: error: "), lines
    return lines[0]


# --- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    """Real TensorRT-RTX plans with their sidecars: fp16 with a fixed batch of 1, and fp32 with the
    dynamic batch profile 1:2:4."""
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX builds plans without a GPU: pip install -e '.[rtx]'")
    pytest.importorskip("onnx", reason="building needs the export extra: pip install -e '.[export]'")
    from u2edge.export.build import BuildOptions, build_engine

    tmp = tmp_path_factory.mktemp("plans")
    fixed = build_engine(BuildOptions(output=tmp / "fp16.engine", precision="fp16", tensorrt="tensorrt_rtx"))
    dynamic = build_engine(BuildOptions(output=tmp / "dyn.engine", precision="fp32", tensorrt="tensorrt_rtx",
                                        dynamic_batch=(1, 2, 4), targets=["sm86"]))
    return {"fixed": fixed.path, "dynamic": dynamic.path}


@pytest.fixture(scope="module")
def dynamic_onnx(tmp_path_factory):
    """The official U2-NetP with a dynamic batch (u2edge export --dynamic-batch, graph edits only)."""
    pytest.importorskip("onnx", reason="exporting needs the export extra: pip install -e '.[export]'")
    from u2edge.export import export_onnx

    return export_onnx(tmp_path_factory.mktemp("dyn") / "u2netp_dyn.onnx", batch=None).path


# --- the three kinds of network --------------------------------------------------------------------
@pytest.mark.trt
def test_a_fixed_batch_plan(tmp_path, plans):
    repo, _ = repo_of(tmp_path, engine=plans["fixed"])
    found = check_repo(repo, plans["fixed"])
    network = found["u2edge_network"]
    assert network.platform == "tensorrt_plan" and network.max_batch_size == 0
    assert not network.HasField("dynamic_batching")
    assert [(t.name, list(t.dims)) for t in network.input] == [("input", [1, 3, 320, 320])]
    assert [(t.name, list(t.dims)) for t in network.output] == [("mask", [1, 1, 320, 320])]
    assert network.input[0].data_type == network.output[0].data_type == model_config_pb2.TYPE_FP32
    [group] = network.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU and group.count == 1
    # its sidecar travels with it, and the pre model pads nothing: the plan's batch is 1
    assert Sidecar.read(repo / "u2edge_network" / "1" / "model.plan") == Sidecar.read(plans["fixed"])
    assert list(found["u2edge_pre"].output[0].dims) == [1, 3, 320, 320]
    assert list(found["u2edge_post"].input[0].dims) == [1, 1, 320, 320]


@pytest.mark.trt
def test_a_dynamic_batch_plan(tmp_path, plans):
    repo, _ = repo_of(tmp_path, engine=plans["dynamic"])
    network = check_repo(repo, plans["dynamic"])["u2edge_network"]
    assert network.max_batch_size == 4 and network.HasField("dynamic_batching")  # the profile's max
    assert [list(t.dims) for t in network.input] == [[3, 320, 320]]
    assert [list(t.dims) for t in network.output] == [[1, 320, 320]]
    repo, found = repo_of(tmp_path, "two", engine=plans["dynamic"], max_batch=2, instances=3)
    check_repo(repo, plans["dynamic"])
    assert found["u2edge_network"].max_batch_size == 2
    assert {name: [g.count for g in c.instance_group] for name, c in found.items() if name != "u2edge"} == \
        dict.fromkeys(MODELS - {"u2edge"}, [3])
    # one frame a request: the pre and post models carry the network's tensors with a batch of 1
    assert list(found["u2edge_pre"].output[0].dims) == [1, 3, 320, 320]


def test_the_official_onnx_on_onnxruntime(tmp_path, official_onnx):
    repo, _ = repo_of(tmp_path)  # --model u2netp is the default
    network = check_repo(repo, official_onnx)["u2edge_network"]
    assert network.platform == "onnxruntime_onnx" and network.max_batch_size == 0
    # the official graph's own names and shapes: input.1, and d0 of its seven outputs
    assert [(t.name, list(t.dims)) for t in network.input] == [("input.1", [1, 3, 320, 320])]
    assert [(t.name, list(t.dims)) for t in network.output] == [("1959", [1, 1, 320, 320])]
    assert network.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_AUTO
    assert "fp32" in (repo / "u2edge_network" / "config.pbtxt").read_text().splitlines()[0]


def test_a_dynamic_batch_onnx(tmp_path, dynamic_onnx):
    repo, _ = repo_of(tmp_path, engine=dynamic_onnx, max_batch=16)
    network = check_repo(repo, dynamic_onnx)["u2edge_network"]
    assert network.platform == "onnxruntime_onnx" and network.max_batch_size == 16
    assert network.HasField("dynamic_batching")
    assert [(t.name, list(t.dims)) for t in network.input] == [("input", [3, 320, 320])]


# --- the Python network: what u2edge image runs ----------------------------------------------------
def run_repo(repo: Path, found: dict[str, ModelConfig], frames: list[np.ndarray]) -> list[np.ndarray]:
    """The ensemble's three steps in this process, as the Python models run them on the server:
    the same functions, on the repository's own configs and model file."""
    pre, network, post = (as_json(found[name]) for name in ("u2edge_pre", "u2edge_network", "u2edge_post"))
    spec, shape = steps.preprocessing(pre), steps.dims(pre, "output", "NETWORK_INPUT")
    made = [steps.network_input(frame, spec, shape) for frame in frames]
    with steps.open_network(repo / "u2edge_network" / "1", steps.parameters(network)) as engine:
        outputs = steps.run_network(engine, [tensor for tensor, _ in made])  # one call, as one dynamic batch
    assert [o.shape for o in outputs] == [tuple(steps.dims(post, "input", "NETWORK_OUTPUT"))] * len(frames)
    return [steps.frame_mask(out, size) for out, (_, size) in zip(outputs, made)]


def test_the_python_network_runs_what_u2edge_image_runs(tmp_path, photos):
    repo, found = repo_of(tmp_path, python_network=True)
    network = found["u2edge_network"]
    assert network.backend == "python" and network.max_batch_size == 0
    assert network.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert (repo / "u2edge_network" / "1" / "model.py").read_bytes() == \
        (MODEL_SOURCES / "u2edge_network.py").read_bytes()
    with U2EdgeEngine() as engine:  # the model, precision and backend u2edge image picks here
        check_repo(repo, Path(engine.path))  # that very file
        params = {k: v.string_value for k, v in network.parameters.items()}
        assert params == {"u2edge.model_file": "model.onnx", "u2edge.backend": engine.backend.name,
                          "u2edge.precision": "bf16" if engine.choice.precision.value == "bf16" else "auto"}
        assert engine.choice.precision.value in (repo / "u2edge" / "config.pbtxt").read_text().splitlines()[0]
        frames = list(photos.values())  # five sizes
        for mask, frame in zip(run_repo(repo, found, frames), frames):
            assert np.array_equal(mask, engine(frame))


def test_a_python_network_batches_requests(tmp_path, photos, dynamic_onnx):
    repo, found = repo_of(tmp_path, engine=dynamic_onnx, python_network=True, max_batch=2)
    check_repo(repo, dynamic_onnx)
    network = found["u2edge_network"]
    assert network.max_batch_size == 2 and network.HasField("dynamic_batching")
    assert [list(t.dims) for t in network.input] == [[3, 320, 320]]
    frames = list(photos.values())[:3]  # three requests: run two, then one
    with U2EdgeEngine(dynamic_onnx) as engine:
        for mask, frame in zip(run_repo(repo, found, frames), frames):
            assert np.array_equal(mask, engine(frame))



def test_a_fixed_batch_of_two(tmp_path, photos):
    """A model whose batch is fixed at 2: the pre model pads each frame to it, the post model reads row 0."""
    pytest.importorskip("onnx", reason="exporting needs the export extra: pip install -e '.[export]'")
    from u2edge.export import export_onnx

    model = export_onnx(tmp_path / "u2netp_b2.onnx", batch=2).path
    repo, found = repo_of(tmp_path, engine=model, python_network=True)
    check_repo(repo, model)
    assert found["u2edge_network"].max_batch_size == 0
    assert list(found["u2edge_pre"].output[0].dims) == [2, 3, 320, 320]
    assert list(found["u2edge_post"].input[0].dims) == [2, 1, 320, 320]
    frames = list(photos.values())[:2]
    with U2EdgeEngine(model) as engine:
        for mask, frame in zip(run_repo(repo, found, frames), frames):
            assert np.array_equal(mask, engine(frame))


# --- bad inputs: one line, nothing written ---------------------------------------------------------
@pytest.mark.trt
@pytest.mark.parametrize("case", ["missing", "no sidecar", "altered", "beyond profile", "fixed batch",
                                  "python plan", "both", "suffix", "instances"])
def test_bad_inputs_are_one_line(tmp_path, capsys, plans, case):
    out = tmp_path / "repo"
    fixed, dynamic = plans["fixed"], plans["dynamic"]
    if case == "no sidecar":
        shutil.copy(fixed, tmp_path / "bare.engine")  # a plan from trtexec, say
    elif case == "altered":
        shutil.copy(fixed, tmp_path / "a.engine")
        shutil.copy(Sidecar.path_for(fixed), Sidecar.path_for(tmp_path / "a.engine"))
        with open(tmp_path / "a.engine", "r+b") as f:
            f.seek(1000)
            f.write(b"\xff")
    elif case == "suffix":
        (tmp_path / "u2netp.pth").write_bytes(b"weights")
    argv, expected = {
        "missing": (["--engine", tmp_path / "nope.engine"], f"--engine {tmp_path / 'nope.engine'}: no such file"),
        "no sidecar": (["--engine", tmp_path / "bare.engine"], "has no sidecar (bare.engine.json)"),
        "altered": (["--engine", tmp_path / "a.engine"], "does not match its sidecar (sha256 differs)"),
        "beyond profile": (["--engine", dynamic, "--max-batch", "5"],
                           "--max-batch 5 is beyond dyn.engine's batch profile (at most 4)"),
        "fixed batch": (["--engine", fixed, "--max-batch", "2"], "--max-batch 2: fp16.engine has a fixed batch of 1"),
        "python plan": (["--engine", fixed, "--python-network"], "drop --python-network to serve the plan"),
        "both": (["--engine", fixed, "--model", "u2netp"], "give --engine or --model, not both"),
        "suffix": (["--engine", tmp_path / "u2netp.pth"], "Triton serves .engine/.plan (TensorRT) and .onnx models"),
        "instances": (["--instances", "0"], "--instances 0 must be at least 1"),
    }[case]
    assert expected in cli_error(capsys, "triton", "repo", "-o", out, *argv)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_precisions_that_onnxruntime_does_not_run_point_to_the_python_network(tmp_path, capsys):
    line = cli_error(capsys, "triton", "repo", "-o", tmp_path / "repo", "--precision", "int8")
    assert "--precision int8 runs on OpenVINO" in line and "add --python-network" in line
    assert not (tmp_path / "repo").exists()


def test_an_existing_folder_is_never_overwritten_silently(tmp_path, capsys):
    out = tmp_path / "repo"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    line = cli_error(capsys, "triton", "repo", "-o", out)
    assert "exists and is not empty" in line and "--force" in line
    line = cli_error(capsys, "triton", "repo", "-o", out, "--force")  # not a repository u2edge wrote
    assert "is not a repository written by u2edge triton repo" in line
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and (out / "mine.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("a file")
    assert "is a file" in cli_error(capsys, "triton", "repo", "-o", tmp_path / "file")
    assert (tmp_path / "file").read_text() == "a file"


def test_force_replaces_a_repository_whole(tmp_path, official_onnx, dynamic_onnx):
    repo, _ = repo_of(tmp_path)
    (repo / "u2edge_network" / "2").mkdir()  # something of the old repository that the new one lacks
    write_repo(RepoOptions(output=repo, engine=dynamic_onnx, force=True))
    check_repo(repo, dynamic_onnx)
    assert not (repo / "u2edge_network" / "2").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # no temp folder left beside it
    (tmp_path / "empty").mkdir()  # an empty folder needs no force
    write_repo(RepoOptions(output=tmp_path / "empty"))
    check_repo(tmp_path / "empty", official_onnx)


def test_a_full_disk_leaves_nothing(tmp_path, official_onnx):
    with small_disk(tmp_path / "disk", "1M") as disk:  # the 4.6 MB ONNX cannot fit
        with pytest.raises(OutputError, match="the disk is full; nothing was left behind"):
            write_repo(RepoOptions(output=disk / "repo"))
        assert list(disk.iterdir()) == []


# --- the command line ------------------------------------------------------------------------------
def test_the_command_line(tmp_path, official_onnx):
    proc = run_cli("triton", "repo", "-o", tmp_path / "repo", "--json")
    summary = json.loads(proc.stdout)
    assert summary["network"] == "onnxruntime_onnx" and summary["max_batch_size"] == 0
    assert summary["input"] == ["input.1", [1, 3, 320, 320]] and summary["precision"] == "fp32"
    check_repo(tmp_path / "repo", official_onnx)


def test_help_works_with_only_base_dependencies():
    """No tritonclient, pytriton, torch or TensorRT: the help of u2edge triton and its subcommands."""
    blocked = ("torch", "onnx", "tensorrt", "tensorrt_rtx", "tritonclient", "pytriton")
    for argv in (["triton", "--help"], ["triton", "repo", "--help"], ["triton", "serve", "--help"]):
        code = (f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\n"
                f"from u2edge.cli import main\nsys.exit(main({argv!r}))\n")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert "Example" in proc.stdout


def test_serve_options_and_logging_after_the_subcommand():
    args = build_parser().parse_args(["triton", "serve", "repo"])
    assert (args.repo, args.http_port, args.grpc_port, args.host) == ("repo", 8000, 8001, "127.0.0.1")
    args = build_parser().parse_args(["triton", "serve", "repo", "--http-port", "9000", "--host", "0.0.0.0"])
    assert (args.http_port, args.host) == (9000, "0.0.0.0")
    # -v before or after the subcommand, and neither
    assert build_parser().parse_args(["triton", "-v", "repo", "-o", "r"]).verbose is True
    assert build_parser().parse_args(["triton", "repo", "-o", "r", "-v"]).verbose is True
    args = build_parser().parse_args(["triton", "repo", "-o", "r"])
    assert args.verbose is False and args.quiet is False

