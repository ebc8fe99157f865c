"""The fuzz run: ``u2edge image`` over a corpus of damaged and odd files made from real photos, in one process.

    python benchmarks/fuzz.py [--cuts 20] [--flips 10] [--seed 14] [--json-out fuzz.json] [--keep DIR]

The corpus (u2edge.bench.fuzz, deterministic for a seed) holds, for each scikit-image photo, its
PNG and JPEG, truncations at random offsets and copies with bits flipped in the pixel data; then
gray, 16-bit, RGBA, 1x1 and one-pixel-high images and other formats, and files no decoder takes:
empty, text, 60000x60000 headers, a PNG just under the pixel limit with no pixel data and a real
PNG bomb just over it. Reported: inputs tried, outputs written, failures reported (lines on stderr
naming a file), violations (an input with neither, both, several lines, or an output of the wrong
size), processes lost (a traceback or a death by signal; must be 0) and the peak resident memory.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from u2edge import read_image
from u2edge.bench.fuzz import fuzz_corpus, outcome, run_measured
from u2edge.bench.run import machine, skimage_photos

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
          "horse.png", "hubble_deep_field.jpg")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=20, help="truncations of each photo's PNG and JPEG (default: 20)")
    parser.add_argument("--flips", type=int, default=10, help="flipped-bit copies of each (default: 10)")
    parser.add_argument("--seed", type=int, default=14, help="corpus seed (default: 14)")
    parser.add_argument("--engine", help="model file (default: the official U2-NetP at --precision auto)")
    parser.add_argument("--keep", metavar="DIR", help="write the corpus and outputs here instead of a temp folder")
    parser.add_argument("--json-out", help="also write the results here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="u2edge-fuzz-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        photos = {p.name: read_image(p) for p in skimage_photos(PHOTOS)}
        cases = fuzz_corpus(photos, work / "corpus", seed=args.seed, cuts=args.cuts, flips=args.flips)
        command = ["image", work / "corpus", "-o", work / "out", "--json", *(["--engine", args.engine]
                                                                           if args.engine else [])]
        started = time.perf_counter()
        rc, stdout, stderr, peak = run_measured(*command)
        seconds = time.perf_counter() - started
        result = outcome(cases, work / "out", stderr)
    lost = int(rc < 0 or rc not in (0, 1) or "Traceback" in stderr)
    noise = [line for line in stderr.splitlines() if line.strip() and not line.startswith("u2edge: ")]
    # the native decoders' own messages, by kind (numbers and timestamps stripped)
    kinds = collections.Counter(re.sub(r"\b\d+\b", "N", re.sub(r"^\[[^]]*\]", "", line)).strip() for line in noise)
    expected = {kind: sum(case.expect == kind for case in cases) for kind in ("written", "failed", "either")}
    report = {
        "machine": machine(), "seed": args.seed, "photos": list(PHOTOS), "inputs": len(cases),
        "expected": expected, "written": result["written"], "reported": result["reported"],
        "violations": result["violations"], "processes_lost": lost, "exit_code": rc,
        "peak_rss_mb": round(peak / 2**20, 1), "seconds": round(seconds, 1),
        "other_stderr_lines": len(noise), "other_stderr_kinds": dict(kinds.most_common()),
        "summary": json.loads(stdout) if rc in (0, 1) and stdout.strip() else None,
    }
    if report["summary"] is not None:
        report["summary"].pop("images", None)  # per-image rows: long, and in the outputs themselves
    rows = [("CPU", report["machine"]["cpu"]), ("inputs tried", f"{len(cases)} ({expected['written']} clean, "
            f"{expected['either']} truncated or flipped, {expected['failed']} undecodable or over the limit)"),
            ("outputs written", result["written"]), ("failures reported", result["reported"]),
            ("violations", len(result["violations"])), ("processes lost", lost), ("exit code", rc),
            ("peak RSS", f"{report['peak_rss_mb']:.0f} MiB"), ("seconds", f"{seconds:.1f}"),
            ("other stderr lines", f"{len(noise)} (OpenCV, libpng and libjpeg messages)")]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    for line in result["violations"]:
        print(f"  violation: {line}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 1 if lost or result["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
