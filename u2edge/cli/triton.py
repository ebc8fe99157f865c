"""Serve u2edge models with NVIDIA Triton Inference Server: write a model repository, or serve one.

Examples:
  u2edge triton repo -o repo/ --engine u2netp_fp16.engine     # TensorRT plan (build it on the server's GPU)
  u2edge triton repo -o repo/ --engine u2netp_dyn.engine --max-batch 8 --instances 2
  u2edge triton repo -o repo/ --model u2net                    # official ONNX on Triton's onnxruntime backend
  u2edge triton repo -o repo/ --python-network                 # what `u2edge image` runs, in the Python backend
  u2edge triton serve repo/                                    # tritonserver from PATH, else pytriton's
  u2edge image photo.jpg -o out/ --engine triton://127.0.0.1:8001/u2edge

The repository's ensemble `u2edge` takes FRAME (one uint8 HxWx3 BGR frame of any size) and returns
MASK (float32 HxW in [0, 1]). Its pre- and post-processing run u2edge's own code in Triton's Python
backend, so the server's Python needs u2edge (pip install 'u2edge[triton]').
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_engine_option, add_json_option, logging_options, print_json, print_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from . import _flags

    commands = parser.add_subparsers(dest="triton_command", required=True, metavar="SUBCOMMAND")
    # -v/-q again after the subcommand; SUPPRESS keeps one given before it ("u2edge triton -v repo")
    common = logging_options()
    for action in common._actions:  # set_defaults would put SUPPRESS itself into the namespace
        action.default = argparse.SUPPRESS
    for name, add, run in (("repo", add_repo_arguments, run_repo), ("serve", add_serve_arguments, run_serve)):
        doc = run.__doc__.strip()
        sub = commands.add_parser(name, help=doc.splitlines()[0], description=doc, parents=[common],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        add(sub)
        sub.set_defaults(triton_run=run, triton_flags=_flags(sub))


def run(args: argparse.Namespace) -> int:
    args.flags = {**args.flags, **args.triton_flags}  # errors name the subcommand's flags
    return args.triton_run(args)


def add_repo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, metavar="REPO",
                        help="the repository folder to write (new or empty)")
    add_engine_option(parser)
    for action in parser._actions:  # the shared option, for what Triton serves
        if action.dest == "engine":
            action.help = ("a model file instead: .engine/.plan (TensorRT, with the sidecar u2edge build writes) or "
                           ".onnx, run at its own precision")
    group = parser.add_argument_group("serving")
    group.add_argument("--max-batch", type=int, metavar="N",
                       help="a dynamic-batch model's largest batch, with Triton's dynamic batching (default: a "
                            "plan's profile max, else 8); a fixed-batch model runs its own batch")
    group.add_argument("--instances", type=int, default=1, metavar="N",
                       help="instances of each model (default: 1); the network's run on the GPU for a plan")
    group.add_argument("--python-network", action="store_true",
                       help="run the network in Triton's Python backend on u2edge's CPU backend (OpenVINO or ONNX "
                            "Runtime), with the model and precision `u2edge image` picks: for servers without the "
                            "onnxruntime and tensorrt backends, such as the one pytriton bundles")
    parser.add_argument("--force", action="store_true", help="replace an existing repository written by this command")
    add_json_option(parser)


def run_repo(args: argparse.Namespace) -> int:
    """Write a Triton model repository: the network, u2edge's pre/post-processing, the ensemble.

    Examples:
      u2edge triton repo -o repo/ --engine u2netp_fp16.engine
      u2edge triton repo -o repo/ --engine u2netp_dyn.engine --max-batch 8
      u2edge triton repo -o repo/ --model u2netp --python-network

    The network is a TensorRT plan (.engine/.plan from `u2edge build`, which reads its tensors and
    batch profile from the sidecar beside it), an ONNX on Triton's onnxruntime backend (--model, or
    --engine MODEL.onnx), or with --python-network the model `u2edge image` would run with the same
    options, resolved now and copied in. The repository is written into a temp folder beside REPO,
    then renamed into place: it is complete or absent.
    """
    from ..triton.repo import RepoOptions, write_repo

    result = write_repo(RepoOptions(output=Path(args.output), model=args.model,
                                    engine=Path(args.engine) if args.engine else None, precision=args.precision,
                                    max_batch=args.max_batch, instances=args.instances,
                                    python_network=args.python_network, force=args.force))
    if args.json:
        print_json(result.to_dict())
        return 0
    net = result.network
    batch = (f"dynamic, up to {net.max_batch} frames (Triton's dynamic batching)" if net.max_batch
             else f"fixed, {net.input_dims[0]}")
    print_table([("repository", f"{result.path} ({', '.join(result.models)})"),
                 ("ensemble", "u2edge: FRAME uint8 HxWx3 BGR, any size -> MASK float32 HxW"),
                 ("network", f"{net.kind}: {net.source}"),
                 ("runs", net.about),
                 ("tensors", f"{net.input} {list(net.input_dims)} -> {net.output} {list(net.output_dims)}"),
                 ("batch", batch),
                 ("instances", f"{args.instances} of each model"),
                 ("serve", f"u2edge triton serve {result.path}")])
    if net.kind == "onnxruntime_onnx" and args.engine is None:
        from ..cpu import choose_precision

        here = choose_precision(args.model or "u2netp", args.precision)
        if here.precision.value != net.precision:
            print(f"note: u2edge image runs {here.model} {here.precision.value} on this CPU ({here.reason}); "
                  "--python-network serves exactly that")
    return 0


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repo", metavar="REPO", help="a model repository (u2edge triton repo)")
    parser.add_argument("--http-port", type=int, default=8000, metavar="PORT", help="HTTP port (default: 8000)")
    parser.add_argument("--grpc-port", type=int, default=8001, metavar="PORT", help="gRPC port (default: 8001)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for every "
                             "interface)")


def run_serve(args: argparse.Namespace) -> int:
    """Serve a model repository with Triton until Ctrl-C or SIGTERM.

    Examples:
      u2edge triton serve repo/
      u2edge triton serve repo/ --grpc-port 9001 --http-port 9000
      u2edge triton serve repo/ --host 0.0.0.0      # reachable from other machines

    Runs `tritonserver` from PATH (an NGC container, a JetPack install), else the one that
    nvidia-pytriton bundles (pip install 'u2edge[triton]'; its server has only the Python backend,
    so it serves --python-network repositories).
    """
    from ..triton.server import serve

    return serve(Path(args.repo), http_port=args.http_port, grpc_port=args.grpc_port, host=args.host)
