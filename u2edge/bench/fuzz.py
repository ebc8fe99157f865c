"""Damaged and odd image files made from real photos, and what ``u2edge image`` must do with each.

Each input expects to be ``written`` (a clean image: an output of its own size), ``failed`` (it
cannot be decoded, or claims more pixels than the limit: one line on stderr naming it), or
``either`` (a truncation or flipped bytes past the header: an output of the photo's size, or one
line). ``outcome`` checks a run against that, and ``run_measured`` runs the CLI and measures its
peak memory; ``tests/test_fuzz.py`` and ``benchmarks/fuzz.py`` use them.
"""

from __future__ import annotations

import math
import os
import random
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..images import MAX_PIXELS

__all__ = ["FuzzInput", "fuzz_corpus", "outcome", "png_header", "png_bomb", "run_measured"]


@dataclass(frozen=True)
class FuzzInput:
    path: Path
    kind: str  # what was done to it, e.g. "truncated png at 100 bytes"
    expect: str  # "written", "failed" or "either"
    size: tuple[int, int] | None = None  # (height, width) of the output, when one may be written


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header(width: int, height: int, idat: bytes = b"\x78\x9c\x00") -> bytes:
    """A PNG that claims ``width`` x ``height`` 8-bit RGB pixels, with valid CRCs and the pixel
    data ``idat`` (by default a zlib stream cut short)."""
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


def png_bomb(width: int, height: int) -> bytes:
    """A valid 8-bit gray PNG of zeros: a few hundred KiB that decode to ``width * height`` pixels."""
    deflate = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then the row
    block = 256
    parts = [deflate.compress(row * block) for _ in range(height // block)]
    parts += [deflate.compress(row * (height % block)), deflate.flush()]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def _jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """A real JPEG whose frame header claims another size."""
    data = bytearray(jpeg)
    i = 2
    while not (0xC0 <= data[i + 1] <= 0xCF and data[i + 1] not in (0xC4, 0xC8, 0xCC)):
        i += 2 + struct.unpack_from(">H", data, i + 2)[0]
    struct.pack_into(">HH", data, i + 5, height, width)
    return bytes(data)


def _bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + 64, 0, 0, 14 + len(info)) + info + bytes(64)


def _tiff_header(width: int, height: int) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, width * height)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + bytes(4)
    return b"II*\x00" + struct.pack("<I", 16) + bytes(8) + ifd + bytes(64)


def _webp_header(width: int, height: int) -> bytes:
    vp8x = struct.pack("<I", 0) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _payload_start(data: bytes, ext: str) -> int:
    """Where the pixel data starts, so that flipped bytes there leave the header (the size) alone."""
    if ext == "png":
        return data.index(b"IDAT") + 4
    sos = data.index(b"\xff\xda")
    return sos + 2 + struct.unpack_from(">H", data, sos + 2)[0]


def _encode(ext: str, image: np.ndarray, params: tuple = ()) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    if not ok:
        raise ValueError(f"OpenCV cannot encode {ext}")
    return buf.tobytes()


def fuzz_corpus(photos: dict[str, np.ndarray], folder: Path, *, seed: int = 0, cuts: int = 6, flips: int = 3,
                limit: int = MAX_PIXELS) -> list[FuzzInput]:
    """Write the corpus into ``folder`` and return its inputs: for each photo (HxWx3 uint8 BGR),
    its PNG and JPEG, ``cuts`` truncations and ``flips`` flipped-byte copies of each; then, from
    the first photo, gray, 16-bit, RGBA, 1x1, one-pixel-high and other formats; and files that no
    decoder should take: empty, text, headers of 60000x60000 pixels, a PNG just under ``limit``
    with no pixel data, and a real PNG just over it. Deterministic for a ``seed``; names are unique
    stems, so that every output name differs."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[FuzzInput] = []

    def add(name: str, data: bytes, expect: str, size: tuple[int, int] | None, kind: str) -> None:
        path = folder / f"{len(cases):03d}_{name}"
        path.write_bytes(data)
        cases.append(FuzzInput(path, kind, expect, size))

    for photo, image in photos.items():
        stem, size = Path(photo).stem, image.shape[:2]
        for ext, data in (("png", _encode(".png", image)), ("jpg", _encode(".jpg", image))):
            add(f"{stem}.{ext}", data, "written", size, f"clean {ext}")
            head = min(64, len(data) - 1)  # always cut one header at a few bytes, then anywhere
            for cut in sorted({1, head} | {rng.randrange(1, len(data)) for _ in range(max(cuts - 2, 0))}):
                add(f"{stem}_cut{cut}.{ext}", data[:cut], "either", size, f"{ext} truncated at {cut} bytes")
            start = _payload_start(data, ext)
            for k in range(flips):
                flipped = bytearray(data)
                count = (1, 16, 256)[k % 3]
                for at in rng.sample(range(start, len(data)), min(count, len(data) - start)):
                    flipped[at] ^= 1 << rng.randrange(8)
                add(f"{stem}_flip{k}.{ext}", bytes(flipped), "either", size, f"{ext} with {count} bits flipped")

    image = next(iter(photos.values()))
    h, w = image.shape[:2]
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    wide = image.astype(np.uint16) * 257
    layouts = {
        "gray.png": _encode(".png", gray), "gray.jpg": _encode(".jpg", gray),
        "rgb16.png": _encode(".png", wide), "gray16.png": _encode(".png", gray.astype(np.uint16) * 257),
        "rgba.png": _encode(".png", np.dstack([image, gray])), "rgb16.tif": _encode(".tif", wide),
        "photo.bmp": _encode(".bmp", image), "photo.tif": _encode(".tif", image),
        "photo.webp": _encode(".webp", image, (cv2.IMWRITE_WEBP_QUALITY, 90)), "photo.ppm": _encode(".ppm", image),
    }
    for name, data in layouts.items():
        add(name, data, "written", (h, w), name)
    one = cv2.resize(image, (1, 1), interpolation=cv2.INTER_AREA)
    add("pixel.png", _encode(".png", one), "written", (1, 1), "1x1 png")
    add("pixel.jpg", _encode(".jpg", one), "written", (1, 1), "1x1 jpg")
    add("row.png", _encode(".png", image[:1]), "written", (1, w), f"1x{w} png")
    add("column.png", _encode(".png", image[:, :1]), "written", (h, 1), f"{h}x1 png")

    jpeg = _encode(".jpg", image)
    side = math.isqrt(limit)  # side * side <= limit < (side + 1) ** 2
    bad = {
        "empty.png": b"", "empty.jpg": b"", "text.png": b"not an image, just text named .png\n" * 20,
        "page.jpg": b"<!doctype html><title>404 Not Found</title>\n", "zeros.png": bytes(4096),
        "signature.png": b"\x89PNG\r\n\x1a\n", "huge.png": png_header(60000, 60000),
        "huge.jpg": _jpeg_with_size(jpeg, 60000, 60000), "huge.bmp": _bmp_header(60000, 60000),
        "huge.tif": _tiff_header(60000, 60000), "huge.webp": _webp_header(16000, 16000),
        "under_limit.png": png_header(side, side), "bomb.png": png_bomb(side + 500, side + 500),
    }
    for name, data in bad.items():
        add(name, data, "failed", None, name)
    return cases


def outcome(cases: list[FuzzInput], outdir: Path, stderr: str) -> dict:
    """How a ``u2edge image CORPUS -o OUTDIR`` run treated each input: written (an output of the
    expected size, which decodes), reported (exactly one ``u2edge:`` line starting with its path),
    and every violation of the input's expectation, one line each."""
    lines = [line for line in stderr.splitlines() if line.startswith("u2edge: ")]
    written, reported, violations = [], [], []
    for case in cases:
        out = outdir / f"{case.path.stem}.png"
        naming = [line for line in lines if line.startswith(f"u2edge: {case.path}: ")]
        if out.exists():
            mask = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
            if mask is None or mask.shape[:2] != case.size:
                violations.append(f"{case.path.name} ({case.kind}): output {None if mask is None else mask.shape}, "
                                  f"expected {case.size}")
            written.append(case)
        if naming:
            reported.append(case)
        if len(naming) > 1:
            violations.append(f"{case.path.name} ({case.kind}): {len(naming)} lines name it")
        if out.exists() == bool(naming):
            violations.append(f"{case.path.name} ({case.kind}): " + ("both written and reported" if naming
                                                                     else "neither written nor reported"))
        if case.expect == "written" and not out.exists():
            violations.append(f"{case.path.name} ({case.kind}): a clean image, not written: {naming}")
        if case.expect == "failed" and out.exists():
            violations.append(f"{case.path.name} ({case.kind}): should fail, but an output was written")
    return {"inputs": len(cases), "written": len(written), "reported": len(reported), "violations": violations,
            "lines": lines}


# Runs ARGV and writes its peak RSS (KiB) to the file PEAK, passing its exit status on. It stands
# between the caller and the command because Linux carries a process's high-water RSS across exec:
# a command started straight from a large process (a long pytest session) would report that
# process's peak as its own. This small process's peak is what its child inherits instead.
_MEASURE = """
import os, signal, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as peak:
    peak.write(str(usage.ru_maxrss))
if os.WIFSIGNALED(status):
    signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
sys.exit(os.WEXITSTATUS(status))
"""


def run_measured(*args, env: dict | None = None) -> tuple[int, str, str, int]:
    """``python -m u2edge ARGS`` in a subprocess: (exit status, stdout, stderr, the command's own
    peak resident memory in bytes, on Linux). A death by signal is a negative status."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".peak") as peak:
        proc = subprocess.run([sys.executable, "-c", _MEASURE, peak.name, sys.executable, "-m", "u2edge",
                               *map(str, args)], stdout=out, stderr=err, env={**os.environ, **(env or {})})
        out.seek(0)
        err.seek(0)
        kib = peak.read()
        return proc.returncode, out.read().decode(), err.read().decode(errors="replace"), int(kib or 0) * 1024
