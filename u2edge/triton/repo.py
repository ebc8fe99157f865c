"""``write_repo``: a Triton Inference Server model repository that serves a u2edge model.

    REPO/u2edge/          ensemble: FRAME (one uint8 HxWx3 BGR frame, any size) -> MASK (float32 HxW)
    REPO/u2edge_pre/      Python backend: u2edge's preprocessing -> NETWORK_INPUT, and SIZE (h, w)
    REPO/u2edge_network/  tensorrt_plan (model.plan), onnxruntime_onnx (model.onnx), or with
                          ``python_network`` a Python-backend model that runs model.onnx on u2edge's
                          own CPU backend, as ``U2EdgeEngine`` does
    REPO/u2edge_post/     Python backend: NETWORK_OUTPUT and SIZE -> u2edge's postprocessing -> MASK

A chain of small steps, each usable on its own:

    check_options     the options alone, before anything is loaded
    resolve_network   which file runs, its tensors, batch and precision (``Network``)
    model_configs     the four config.pbtxt texts
    write_repo        all of it written into a temp folder beside REPO, then renamed into place

The Python models import u2edge: the server's Python must have it (``u2edge triton serve`` runs the
bundled server with this environment's).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from .._files import _sweep, default_mode, write_failure
from ..backends.base import Backend, Tensor
from ..compatibility import check_engine
from ..errors import IncompatibleEngineError, ModelFormatError, OutputError, U2EdgeError
from ..precision import RUNTIME_PRECISIONS, Precision
from ..processing import Preprocessing
from ..sidecar import Sidecar
from ..weights import default_onnx

__all__ = ["RepoOptions", "RepoResult", "Network", "write_repo", "check_options", "resolve_network",
           "model_configs", "pbtxt", "ENSEMBLE", "PRE", "NETWORK", "POST", "FRAME", "MASK", "SIZE",
           "NETWORK_INPUT", "NETWORK_OUTPUT", "DEFAULT_MAX_BATCH", "MARK"]

log = logging.getLogger("u2edge")

# the repository's contract: the client sends FRAME to ENSEMBLE and reads MASK
ENSEMBLE, PRE, NETWORK, POST = "u2edge", "u2edge_pre", "u2edge_network", "u2edge_post"
FRAME, MASK, SIZE = "FRAME", "MASK", "SIZE"
NETWORK_INPUT, NETWORK_OUTPUT = "NETWORK_INPUT", "NETWORK_OUTPUT"  # the pre and post models' ends of the network
DEFAULT_MAX_BATCH = 8  # a dynamic-batch ONNX's, as U2EdgeEngine's
MARK = "# written by u2edge triton repo"  # the first line of every config.pbtxt; --force replaces only such repos
MODEL_SOURCES = Path(__file__).parent / "models"  # the Python models' model.py, one file per model


@dataclass
class RepoOptions:
    """What to serve. Each field is a parameter, named as errors name it (the CLI's flags)."""

    output: Path
    model: str | None = None  # an official model by name (default u2netp), when no engine is given
    engine: Path | None = None  # a .engine/.plan or .onnx instead
    precision: Precision | str = Precision.AUTO
    max_batch: int | None = None  # a dynamic batch's largest; None: the profile's max, or DEFAULT_MAX_BATCH
    instances: int = 1  # instances of each model
    python_network: bool = False  # run the network in the Python backend, on u2edge's CPU backend
    force: bool = False  # replace an existing repository written by u2edge triton repo


@dataclass(frozen=True)
class Network:
    """The model ``u2edge_network`` runs: its file, tensors, batch, and what it is."""

    kind: str  # "tensorrt_plan", "onnxruntime_onnx" or "python"
    source: Path  # the model file, copied into u2edge_network/1/ as ``filename``
    filename: str
    input: str
    output: str
    input_dims: tuple[int, ...]  # with the batch first: a fixed batch, or -1
    output_dims: tuple[int, ...]
    max_batch: int  # 0: the batch is fixed (input_dims[0]); else Triton's max_batch_size, with dynamic batching
    preprocessing: Preprocessing
    precision: str
    about: str  # what runs, and why this precision
    parameters: dict[str, str] = field(default_factory=dict)  # the Python network's: how to open its model

    def dims(self, full: tuple[int, ...]) -> list[int]:
        """A tensor's dims as Triton's config has them: without the batch when Triton batches."""
        return list(full[1:] if self.max_batch else full)


@dataclass
class RepoResult:
    path: Path
    network: Network
    models: list[str]

    def to_dict(self) -> dict:
        net = self.network
        return {"repository": str(self.path), "models": self.models, "ensemble": ENSEMBLE, "network": net.kind,
                "source": str(net.source), "precision": net.precision, "about": net.about,
                "max_batch_size": net.max_batch, "input": [net.input, list(net.input_dims)],
                "output": [net.output, list(net.output_dims)]}


def write_repo(options: RepoOptions) -> RepoResult:
    """Write the repository ``options.output``: complete, or not at all."""
    check_options(options)
    output = Path(options.output)
    _check_output(output, options.force)
    network = resolve_network(options)
    configs = model_configs(network, instances=options.instances)
    _publish(output, lambda stage: _fill(stage, network, configs), force=options.force)
    log.info("wrote %s: %s", output, ", ".join(configs))
    return RepoResult(output, network, list(configs))


def check_options(opts: RepoOptions) -> None:
    """Refuse options that cannot go together, before anything is loaded."""
    Precision.parse(opts.precision, RUNTIME_PRECISIONS)
    if opts.engine is not None and opts.model is not None:
        raise U2EdgeError(lambda spell: f"give {spell('engine')} or {spell('model')}, not both")
    if opts.max_batch is not None and opts.max_batch < 1:
        raise U2EdgeError(lambda spell: f"{spell('max_batch')} {opts.max_batch} must be at least 1")
    if opts.instances < 1:
        raise U2EdgeError(lambda spell: f"{spell('instances')} {opts.instances} must be at least 1")


# --- the network ---------------------------------------------------------------------------------
def resolve_network(opts: RepoOptions) -> Network:
    """The file ``u2edge_network`` runs, with its tensors and batch; one U2EdgeError line when it
    cannot be served."""
    precision = Precision.parse(opts.precision, RUNTIME_PRECISIONS)
    if opts.python_network:
        return _python_network(opts, precision)
    if opts.engine is None:
        return _official_onnx(opts, opts.model or "u2netp", precision)
    path = _model_file(opts.engine)
    if precision in (Precision.INT8, Precision.BF16):
        raise U2EdgeError(lambda spell: f"{spell('engine')} {path} runs at the precision it was built with, not "
                                        f"{spell('precision')} {precision.value}; drop {spell('precision')}")
    if path.suffix.lower() in (".engine", ".plan"):
        return _plan(opts, path)
    return _onnx(opts, path, precision=None, about="")


def _model_file(engine: str | os.PathLike) -> Path:
    path = Path(engine)
    if not path.is_file():
        raise U2EdgeError(lambda spell: f"{spell('engine')} {path}: no such file")
    if path.suffix.lower() not in (".engine", ".plan", ".onnx"):
        raise ModelFormatError(lambda spell: f"{spell('engine')} {path}: Triton serves .engine/.plan (TensorRT) and "
                                             ".onnx models; export it first: u2edge export -o MODEL.onnx")
    return path


class _Tensors(Backend):
    """A model's tensors, checked by ``Backend.bind`` as every backend checks them; it runs nothing."""

    name = "tensors"

    def __init__(self, path: Path, inputs: Sequence[Tensor], outputs: Sequence[Tensor], metadata: dict) -> None:
        self.bind(path, inputs, outputs, metadata)
        self.input_shape = tuple(inputs[0][1])
        self.output_shape = tuple(next(shape for name, shape in outputs if name == self.output_name))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError("_Tensors only describes a model")


def _full(shape: Sequence[int | None]) -> tuple[int, ...]:
    return tuple(-1 if d is None or d < 0 else int(d) for d in shape)


def _batching(opts: RepoOptions, name: str, fixed: int | None, profile: tuple[int, int] | None,
              default: int) -> int:
    """Triton's max_batch_size: 0 for a fixed batch; for a dynamic one ``opts.max_batch``, checked
    against the profile (min, max), else ``default``."""
    if fixed is not None:
        if opts.max_batch is not None:
            raise U2EdgeError(lambda spell: f"{spell('max_batch')} {opts.max_batch}: {name} has a fixed batch of "
                                            f"{fixed}; for Triton's dynamic batching, give a model with a dynamic "
                                            "batch (u2edge build --dynamic-batch 1:4:8, or u2edge export "
                                            "--dynamic-batch)")
        return 0
    low, high = profile or (1, None)
    if low > 1:
        raise U2EdgeError(f"{name}'s batch profile starts at {low}, and the ensemble sends one frame a request; "
                          f"rebuild it with --dynamic-batch 1:OPT:MAX")
    if opts.max_batch is None:
        return default
    if high is not None and opts.max_batch > high:
        raise U2EdgeError(lambda spell: f"{spell('max_batch')} {opts.max_batch} is beyond {name}'s batch profile "
                                        f"(at most {high}); give at most {high}, or rebuild it with --dynamic-batch "
                                        f"1:OPT:{opts.max_batch}")
    return opts.max_batch


def _plan(opts: RepoOptions, path: Path) -> Network:
    """A TensorRT plan: its tensors and profile from its sidecar, which must be there and match it."""
    sidecar = Sidecar.read(path)
    if sidecar is None or not sidecar.tensorrt or not sidecar.inputs or not sidecar.outputs:
        what = "no sidecar" if sidecar is None else "a sidecar without its TensorRT tensors"
        raise IncompatibleEngineError(f"{path} has {what} ({Sidecar.path_for(path).name}), so its tensors and "
                                      "preprocessing are unknown; build it with u2edge build, which writes one "
                                      "beside it")
    built = f"{sidecar.tensorrt.get('flavour')} {sidecar.tensorrt.get('version')}"
    check_engine(path, path.read_bytes(), sidecar, built)  # truncated or altered since its build
    shape = lambda t: (t["name"], tuple(None if d < 0 else d for d in t["shape"]))  # noqa: E731
    tensors = _Tensors(path, [shape(t) for t in sidecar.inputs], [shape(t) for t in sidecar.outputs],
                       sidecar.preprocessing or {})
    for tensor in sidecar.inputs[:1] + [t for t in sidecar.outputs if t["name"] == tensors.output_name]:
        if tensor.get("dtype") != "float":
            raise ModelFormatError(f"{path.name}: tensor {tensor['name']} is {tensor.get('dtype')}; u2edge engines "
                                   "keep FP32 inputs and outputs (rebuild it with u2edge build)")
    profile = sidecar.profile or {}
    bounds = (profile["min"][0], profile["max"][0]) if profile.get("min") and profile.get("max") else None
    if tensors.batch_size is None and bounds is None:
        raise IncompatibleEngineError(f"{path}'s sidecar has no batch profile; rebuild it with u2edge build")
    # a plan's profile says how large a batch it was built for: that is the default
    max_batch = _batching(opts, path.name, tensors.batch_size, bounds, bounds[1] if bounds else 0)
    where = ", ".join(sidecar.targets) if sidecar.targets else (sidecar.device or {}).get("gpu", "its GPU")
    if sidecar.tensorrt.get("flavour") != "tensorrt":
        log.warning("%s was built with %s: Triton's tensorrt backend loads TensorRT plans, not %s ones; build the "
                    "plan to serve on the server's GPU, with TensorRT (u2edge build --tensorrt tensorrt)", path, built,
                    sidecar.tensorrt.get("flavour"))
    else:
        log.info("plans do not move between TensorRT versions or GPUs: serve %s with a tritonserver built on %s, on "
                 "%s", path.name, built, where)
    return Network("tensorrt_plan", path, "model.plan", tensors.input_name, tensors.output_name,
                   _full(tensors.input_shape), _full(tensors.output_shape), max_batch, tensors.preprocessing,
                   sidecar.precision or "unknown", f"{sidecar.precision} plan built with {built} for {where}")


def _onnx(opts: RepoOptions, path: Path, *, precision: str | None, about: str) -> Network:
    """An ONNX for Triton's onnxruntime backend: its tensors and preprocessing from the graph."""
    from .._deps import require

    ort = require("onnxruntime")
    session_options = ort.SessionOptions()
    session_options.log_severity_level = 4
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # only its signature
    try:
        session = ort.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFormatError(f"cannot load {path} with ONNX Runtime ({first}); the file is corrupt or not an "
                               "ONNX model") from exc
    dims = lambda shape: tuple(d if isinstance(d, int) else None for d in shape)  # noqa: E731
    meta = session.get_modelmeta().custom_metadata_map
    tensors = _Tensors(path, [(t.name, dims(t.shape)) for t in session.get_inputs()],
                       [(t.name, dims(t.shape)) for t in session.get_outputs()], meta)
    types = {t.name: t.type for t in [*session.get_inputs(), *session.get_outputs()]}
    for name in (tensors.input_name, tensors.output_name):
        if types[name] != "tensor(float)":
            raise ModelFormatError(f"{path.name}: tensor {name} is {types[name]}; the network's input and output "
                                   "must be FP32 (re-export it with u2edge export)")
    max_batch = _batching(opts, path.name, tensors.batch_size, None, DEFAULT_MAX_BATCH)
    precision = precision or meta.get("u2edge.precision", "fp32")
    return Network("onnxruntime_onnx", path, "model.onnx", tensors.input_name, tensors.output_name,
                   _full(tensors.input_shape), _full(tensors.output_shape), max_batch, tensors.preprocessing,
                   precision, about or f"{precision} ONNX on Triton's onnxruntime backend")


def _official_onnx(opts: RepoOptions, model: str, precision: Precision) -> Network:
    """An official model by name on Triton's onnxruntime backend: its FP32 ONNX. u2edge's CPU INT8
    and BF16 run on OpenVINO: a Python network runs them as ``u2edge image`` does."""
    if precision in (Precision.INT8, Precision.BF16):
        build = "int8 --calib-dir DIR" if precision is Precision.INT8 else "fp16"
        raise U2EdgeError(lambda spell: f"{spell('precision')} {precision.value} runs on OpenVINO, which Triton's "
                                        f"onnxruntime backend is not; add {spell('python_network')} to run it as "
                                        f"u2edge image does, or serve a plan built for the GPU (u2edge build "
                                        f"--precision {build} -o MODEL.engine, then {spell('engine')} MODEL.engine)")
    about = f"the fp32 official {model} ONNX on Triton's onnxruntime backend"
    return _onnx(opts, default_onnx(model), precision="fp32", about=about)


def _python_network(opts: RepoOptions, precision: Precision) -> Network:
    """The model, precision and backend that ``U2EdgeEngine`` (so ``u2edge image``) picks for these
    options, resolved now, for a Python-backend model that opens it the same way on the server."""
    from ..engine import U2EdgeEngine

    if opts.engine is not None:
        path = _model_file(opts.engine)
        if path.suffix.lower() != ".onnx":
            raise U2EdgeError(lambda spell: f"{spell('python_network')} runs u2edge's CPU backends, which run .onnx "
                                            f"models, not {path.name}; drop {spell('python_network')} to serve the "
                                            "plan with Triton's tensorrt backend")
    with U2EdgeEngine(opts.engine, model=None if opts.engine else (opts.model or "u2netp"), precision=precision,
                      max_batch=opts.max_batch or DEFAULT_MAX_BATCH) as engine:
        backend = engine.backend
        name = Path(engine.path).name
        # a fixed-batch model takes exactly that batch; a dynamic one up to engine.max_batch
        high = backend.max_batch if backend.batch_size is None else None
        max_batch = _batching(opts, name, backend.batch_size, (1, high) if high else None, engine.max_batch)
        size = backend.preprocessing.imgsz
        batch = backend.batch_size or -1
        if engine.choice is not None:
            ran = engine.choice.precision.value
        else:  # a file runs at its own precision, or lowered to BF16 on OpenVINO
            ran = precision.value if precision is Precision.BF16 else getattr(backend, "precision", "as built")
        # on the server, U2EdgeEngine opens the copied file with the same backend and precision
        parameters = {"u2edge.model_file": "model.onnx", "u2edge.backend": backend.name,
                      "u2edge.precision": Precision.BF16.value if ran == "bf16" else Precision.AUTO.value}
        return Network("python", Path(engine.path), "model.onnx", backend.input_name, backend.output_name,
                       (batch, 3, size, size), (batch, 1, size, size), max_batch, backend.preprocessing, ran,
                       engine.describe(), parameters)


# --- the configs ---------------------------------------------------------------------------------
class _Enum(str):
    """An enum value in a config: written bare."""


def pbtxt(message: dict, indent: int = 0) -> str:
    """``message`` in protobuf text format: a dict is a message, a list of dicts a repeated message
    (a map is a list of {key, value}), a list of scalars a repeated scalar; strings are ASCII."""
    pad, lines = "  " * indent, []
    for key, value in message.items():
        for item in (value if isinstance(value, list) and value and isinstance(value[0], dict) else [value]):
            if isinstance(item, dict):
                lines += [f"{pad}{key} {{", *([pbtxt(item, indent + 1)] if item else []), f"{pad}}}"]
            elif isinstance(item, list):
                lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in item)} ]")
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    return "\n".join(lines)


def _scalar(value) -> str:
    if isinstance(value, _Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))  # ASCII, with the escapes text format shares: \" \\ \n


def _tensor(name: str, dtype: str, dims: Sequence[int]) -> dict:
    return {"name": name, "data_type": _Enum(dtype), "dims": list(dims)}


def _parameters(values: dict[str, str]) -> list[dict]:
    return [{"key": key, "value": {"string_value": value}} for key, value in values.items()]


def model_configs(network: Network, *, instances: int = 1) -> dict[str, str]:
    """Model name -> config.pbtxt text, for the ensemble and the three models it chains."""
    fp32 = "TYPE_FP32"
    # the pre and post models see one frame a request (frames differ in size), so Triton does not
    # batch them; they carry the network's tensors with the batch, 1 frame in a dynamic batch
    one = lambda full: [1 if full[0] == -1 else full[0], *full[1:]]  # noqa: E731
    frame = _tensor(FRAME, "TYPE_UINT8", [-1, -1, 3])
    mask = _tensor(MASK, fp32, [-1, -1])
    instance_group = lambda kind: [{"count": instances, "kind": _Enum(kind)}]  # noqa: E731
    pre = {"name": PRE, "backend": "python", "max_batch_size": 0, "input": [frame],
           "output": [_tensor(NETWORK_INPUT, fp32, one(network.input_dims)), _tensor(SIZE, "TYPE_INT32", [2])],
           "instance_group": instance_group("KIND_CPU"),
           "parameters": _parameters(network.preprocessing.to_metadata())}
    net = {"name": NETWORK, **({"backend": "python"} if network.kind == "python" else {"platform": network.kind}),
           "max_batch_size": network.max_batch,
           "input": [_tensor(network.input, fp32, network.dims(network.input_dims))],
           "output": [_tensor(network.output, fp32, network.dims(network.output_dims))]}
    # a plan runs on the GPU; ONNX Runtime on the GPU where the server has one (KIND_AUTO); Python on the CPU
    kind = {"tensorrt_plan": "KIND_GPU", "onnxruntime_onnx": "KIND_AUTO"}.get(network.kind, "KIND_CPU")
    if network.max_batch:
        net["dynamic_batching"] = {}
    net["instance_group"] = instance_group(kind)
    if network.parameters:
        net["parameters"] = _parameters(network.parameters)
    post = {"name": POST, "backend": "python", "max_batch_size": 0,
            "input": [_tensor(NETWORK_OUTPUT, fp32, one(network.output_dims)), _tensor(SIZE, "TYPE_INT32", [2])],
            "output": [mask], "instance_group": instance_group("KIND_CPU")}
    step = lambda model, inputs, outputs: {  # noqa: E731
        "model_name": model, "model_version": -1,
        "input_map": [{"key": k, "value": v} for k, v in inputs.items()],
        "output_map": [{"key": k, "value": v} for k, v in outputs.items()]}
    ensemble = {"name": ENSEMBLE, "platform": "ensemble", "max_batch_size": 0, "input": [frame], "output": [mask],
                "ensemble_scheduling": {"step": [
                    step(PRE, {FRAME: FRAME}, {NETWORK_INPUT: "network_input", SIZE: "size"}),
                    step(NETWORK, {network.input: "network_input"}, {network.output: "network_output"}),
                    step(POST, {NETWORK_OUTPUT: "network_output", SIZE: "size"}, {MASK: MASK})]}}
    header = f"{MARK} {__version__}: {network.kind}, {network.source.name}, {network.precision}\n"
    return {name: header + pbtxt(config) + "\n"
            for name, config in ((ENSEMBLE, ensemble), (PRE, pre), (NETWORK, net), (POST, post))}


# --- writing -------------------------------------------------------------------------------------
def is_repo(folder: Path) -> bool:
    """Whether ``folder`` holds a repository that u2edge triton repo wrote."""
    try:
        with open(folder / ENSEMBLE / "config.pbtxt", encoding="utf-8", errors="replace") as f:
            return f.readline().startswith(MARK)
    except OSError:
        return False


def _check_output(output: Path, force: bool) -> None:
    """Refuse to overwrite anything but an empty folder, or with ``force`` a u2edge repository."""
    if output.exists() and not output.is_dir():
        raise OutputError(lambda spell: f"{spell('output')} {output} is a file; give a folder for the repository")
    if output.is_dir() and any(output.iterdir()):
        if not force:
            raise OutputError(lambda spell: f"{spell('output')} {output} exists and is not empty; give another "
                                            f"folder, or {spell('force')} to replace a repository written by u2edge "
                                            "triton repo")
        if not is_repo(output):
            raise OutputError(lambda spell: f"{spell('output')} {output} is not a repository written by u2edge triton "
                                            f"repo, so {spell('force')} does not replace it; give another folder")


def _fill(stage: Path, network: Network, configs: dict[str, str]) -> None:
    for name, text in configs.items():
        (stage / name / "1").mkdir(parents=True)  # an ensemble needs its (empty) version folder too
        _write(stage / name / "config.pbtxt", text.encode("ascii"))
    for name in (PRE, POST) + ((NETWORK,) if network.kind == "python" else ()):
        _write(stage / name / "1" / "model.py", (MODEL_SOURCES / f"{name}.py").read_bytes())
    target = stage / NETWORK / "1" / network.filename
    _copy(network.source, target)
    sidecar = Sidecar.path_for(network.source)
    if sidecar.is_file():  # its identity and accuracy report travel with it
        _copy(sidecar, Sidecar.path_for(target))


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # complete before the rename that publishes it, even across a power cut


def _copy(source: Path, target: Path) -> None:
    with open(source, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())


def _publish(output: Path, fill, *, force: bool) -> None:
    """Fill a temp folder beside ``output``, then rename it into place (replacing a repository only
    with ``force``): ``output`` is complete, or as it was. Temp folders that a killed process left
    are removed on the next run."""
    parent = output.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = write_failure(exc)
        raise OutputError(lambda spell: f"cannot create the folder of {spell('output')} {output}: {why}") from exc
    _sweep(parent, r"\..+\.(\d+)\.[a-z0-9_]{8}\.partial$", shutil.rmtree)  # folders; partial_file's are files
    stage = old = None
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{output.name}.{os.getpid()}.", suffix=".partial", dir=parent))
        mode = default_mode()
        os.chmod(stage, mode | (mode & 0o444) >> 2)  # mkdtemp makes 0700; a folder's usual mode: x where r
        fill(stage)
        if force and output.is_dir() and any(output.iterdir()):  # a u2edge repository: _check_output
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.{os.getpid()}.", suffix=".partial", dir=parent))
            os.replace(output, old / "old")
        os.replace(stage, output)  # onto an empty folder, or none
        stage = None
    except OSError as exc:
        why = write_failure(exc)
        raise OutputError(lambda spell: f"cannot write {spell('output')} {output}: {why}; nothing was left "
                                        "behind") from exc
    finally:  # on any error, Ctrl-C included
        if old is not None and not output.exists():
            with contextlib.suppress(OSError):
                os.replace(old / "old", output)  # put the old repository back
        for folder in (stage, old):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
