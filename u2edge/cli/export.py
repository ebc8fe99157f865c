"""Export U-2-Net to ONNX: opset 17, BatchNorm folded, one fused output named "mask".

Examples:
  u2edge export -o u2netp.onnx                              # official U2-NetP, no torch needed
  u2edge export --dynamic-batch --imgsz 288 -o u2netp_dyn.onnx
  u2edge export --model u2net -o u2net.onnx                 # official U2-Net, fetched once (176 MB)
  u2edge export --model u2net --weights u2net.pth -o u2net_pth.onnx   # needs u2edge[export]
  u2edge export --weights u2netp.pth --all-outputs -o u2netp_all.onnx

From an ONNX source (the default) every step is a graph edit; from a .pth the model is exported
through torch.onnx. The result is checked against its source with ONNX Runtime.
"""

from __future__ import annotations

import argparse
import dataclasses

from .options import add_json_option, add_model_option, print_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_option(parser)
    parser.add_argument("--weights", metavar="W",
                        help="official .pth, official or u2edge ONNX, or u2edge checkpoint "
                             "(default: the official ONNX of --model)")
    parser.add_argument("--imgsz", type=int, default=320, help="input side, a multiple of 32 (default: 320)")
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=int, default=1, help="fixed batch size (default: 1)")
    batch.add_argument("--dynamic-batch", action="store_true", help="make the batch dimension dynamic")
    parser.add_argument("--all-outputs", action="store_true", help="keep all seven outputs (mask, d1..d6)")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL.onnx", help="where to write the ONNX")
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    from ..export import check_imgsz, export_onnx

    check_imgsz(args.imgsz)
    result = export_onnx(args.output, arch=args.model, weights=args.weights, imgsz=args.imgsz,
                         batch=None if args.dynamic_batch else args.batch, all_outputs=args.all_outputs)
    if args.json:
        print_json(dataclasses.asdict(result))
        return 0
    batch = "dynamic batch" if args.dynamic_batch else f"batch {args.batch}"
    outputs = "7 outputs" if args.all_outputs else "fused output 'mask'"
    print(f"wrote {result.path} ({result.arch}, opset {result.opset}, {batch}, {args.imgsz}px, {outputs}) "
          f"via {'graph edits' if result.via == 'graph' else 'torch.onnx'} in {result.seconds:.1f} s")
    print(f"max abs error against {result.reference}: {result.max_error:.2e}")
    return 0
