"""The rembg peer of ``u2edge bench``, run by rembg's own Python (benchmarks/setup_rembg.sh):

    PEER_PYTHON rembg_peer.py SPEC.json RESULT.json

It imports only rembg, PIL, numpy, the standard library and the stdlib-only ``timing.py`` beside
it, and writes the same RESULT as ``u2edge.bench.worker``. SPEC's model ("u2netp" or "u2net")
is the rembg model name, and U2NET_HOME must hold its official ONNX (``u2edge.bench.run.rembg_home``
links it there): the script refuses to start rather than let rembg download anything.
"""

import json
import os
from importlib.metadata import version
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from timing import measure, peak_rss_mb  # noqa: E402


def main(argv):
    spec_path, result_path = argv[:2]
    spec = json.loads(Path(spec_path).read_text())
    model = spec["model"]
    home = Path(os.environ.get("U2NET_HOME", ""))
    if not (home / f"{model}.onnx").is_file():
        sys.exit(f"rembg_peer: U2NET_HOME={home} holds no {model}.onnx; refusing to let rembg download it")

    import numpy as np
    import onnxruntime
    import rembg
    from PIL import Image

    session = rembg.new_session(model)
    paths = [Path(p) for p in spec["images"]]
    images = [Image.open(p).convert("RGB") for p in paths]
    inner = session.inner_session
    name = inner.get_inputs()[0].name
    tensors = [session.normalize(im, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (320, 320))[name]
               for im in images]
    out = {"describe": f"rembg {version('rembg')} {model} (onnxruntime {onnxruntime.__version__}, cpu, fp32)",
           "path": str(home / f"{model}.onnx")}
    out["inference"] = measure(lambda x: inner.run(None, {name: x}), tensors, spec["repeats"])
    out["batches"] = {}
    written = Path(result_path).parent

    def end_to_end(path):
        mask = rembg.remove(Image.open(path), session=session, only_mask=True)
        mask.save(written / f"rembg_{path.stem}.png")

    out["end_to_end"] = measure(end_to_end, paths, spec["repeats"])
    masks = {p.name: np.asarray(rembg.remove(im, session=session, only_mask=True).convert("L"), np.float32) / 255.0
             for p, im in zip(paths, images)}
    out["masks"] = str(Path(result_path).with_suffix(".npz"))
    np.savez(out["masks"], **{k: v.astype(np.float16) for k, v in masks.items()})
    out["peak_rss_mb"] = peak_rss_mb()
    Path(result_path).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
