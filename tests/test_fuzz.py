"""One bad file never stops the others: `u2edge image` over a corpus of damaged and odd files made
from real photos, `u2edge eval` with bad images and masks, a truncated video, a calibration folder
and the bench's images. Each bad input is one line naming it, every good one is processed, the
process never dies, and its peak memory stays bounded."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import make_clip
from u2edge.bench.fuzz import fuzz_corpus, outcome, png_bomb, png_header, run_measured
from u2edge.errors import SourceError
from u2edge.images import MAX_PIXELS, write_image
from u2edge.video import Pipeline, open_sink, open_source

# the CLI's peak resident memory over the corpus: about 290 MB here (EPYC, OpenVINO INT8 U2-NetP); the bomb
# in the corpus alone, decoded, took the old code to 1.4 GB
PEAK_RSS_BOUND = 1 << 30


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_image_cli_over_a_fuzz_corpus(photos, tmp_path):
    """Fails on the old code: the 60000x60000 PNG raised cv2.error out of read_image, a traceback,
    and every file after it was left unprocessed."""
    corpus = tmp_path / "corpus"
    cases = fuzz_corpus({name: photos[name] for name in ("astronaut.png", "rocket.jpg")}, corpus, seed=14)
    before = {case.path: digest(case.path) for case in cases}
    assert 40 <= len(cases) <= 80
    rc, stdout, stderr, peak = run_measured("image", corpus, "-o", tmp_path / "out", "--json")

    assert "Traceback" not in stderr, stderr[-3000:]
    assert rc == 1, stderr[-3000:]  # some inputs failed; all the others were written
    result = outcome(cases, tmp_path / "out", stderr)
    assert result["violations"] == [], "\n".join(result["violations"])
    assert result["written"] + result["reported"] == len(cases)
    summary = json.loads(stdout)
    assert (summary["written"], summary["failed"]) == (result["written"], result["reported"])
    assert result["written"] >= sum(case.expect == "written" for case in cases) >= 18
    for name in ("huge.png", "huge.jpg", "huge.bmp", "huge.tif", "huge.webp", "bomb.png"):
        line = next(line for line in result["lines"] if f"_{name}: " in line)
        assert "decompression bombs" in line and f"{MAX_PIXELS:,}" in line and "--max-pixels" in line, line
    assert {case.path: digest(case.path) for case in cases} == before  # inputs never touched
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{case.path.stem}.png" for case in cases if (tmp_path / "out" / f"{case.path.stem}.png").exists())
    assert peak < PEAK_RSS_BOUND, f"peak RSS {peak / 2**20:.0f} MiB"


def test_image_cli_limit_from_the_command_line(photo_paths, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(photo_paths[0], folder / "astronaut.png")  # 512x512
    shutil.copy(photo_paths[1], folder / "chelsea.png")  # 451x300
    rc, _, stderr, _ = run_measured("image", folder, "-o", tmp_path / "out", "--max-pixels", 200_000)
    assert rc == 1
    lines = [line for line in stderr.splitlines() if line.startswith("u2edge: ")]
    assert lines == [f"u2edge: {folder / 'astronaut.png'}: 512x512 is 262,144 pixels, over the limit of 200,000 "
                     "that guards against decompression bombs; if the image is real, raise the limit with "
                     "--max-pixels or the environment variable U2EDGE_MAX_PIXELS"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["chelsea.png"]
    rc, _, stderr, _ = run_measured("image", folder, "-o", tmp_path / "out2", env={"U2EDGE_MAX_PIXELS": "x"})
    assert rc == 1 and stderr.strip().splitlines()[-1] == (
        "u2edge: error: U2EDGE_MAX_PIXELS='x' is not a number of pixels; unset it, or give one such as 134217728")
    assert not (tmp_path / "out2").exists()  # refused before any work


def test_eval_scores_good_pairs_and_names_bad_ones(photos, engine, tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for name, image in photos.items():  # ground truth: the reference model's own masks, binarised
        stem = Path(name).stem
        write_image(images / f"{stem}.png", image)
        write_image(masks / f"{stem}.png", ((engine(image) > 0.5) * 255).astype(np.uint8))
    data = (images / "coffee.png").read_bytes()
    (images / "coffee.png").write_bytes(data[:len(data) // 3])  # a truncated image
    (masks / "chelsea.png").write_bytes(png_header(60000, 60000))  # a mask over the limit
    (masks / "rocket.png").write_bytes(b"not a mask\n")  # text named .png
    rc, stdout, stderr, _ = run_measured("eval", "--images", images, "--masks", masks, "--json")
    assert "Traceback" not in stderr, stderr[-3000:]
    assert rc == 1
    result = json.loads(stdout)
    assert result["images"] == 2  # astronaut and motorcycle_left are scored
    assert result["max_f"] > 0.9
    bad = [images / "coffee.png", masks / "chelsea.png", masks / "rocket.png"]
    assert len(result["errors"]) == 3
    for path in bad:
        assert sum(line.startswith(f"{path}: ") for line in result["errors"]) == 1, (path, result["errors"])
        assert sum(line.startswith(f"u2edge: {path}: ") for line in stderr.splitlines()) == 1, (path, stderr)
    assert "--max-pixels" in next(line for line in result["errors"] if "chelsea" in line)


def test_truncated_video_reports_the_lost_frames_and_keeps_the_rest(photos, engine, tmp_path):
    """Fails on the old code: a video that ended early ended silently, as if complete."""
    clip = make_clip(tmp_path / "clip.avi", photos["chelsea.png"], photos["coffee.png"], frames=12, size=(160, 120),
                     fps=10)
    data = clip.read_bytes()
    clip.write_bytes(data[:len(data) // 2])
    errors = []
    source = open_source(clip)
    assert source.count == 12
    stats = Pipeline(source, engine, open_sink(str(tmp_path / "frames")), on_corrupt=errors.append).run()
    assert len(errors) == 1 and str(errors[0]).startswith(f"{clip}: frames ") and "truncated" in str(errors[0])
    assert stats.corrupt == 1 and 0 < stats.written == stats.captured < 12
    frames = sorted((tmp_path / "frames").iterdir())
    assert len(frames) == stats.written
    assert all(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape[:2] == (120, 160) for p in frames)


def test_video_frames_over_the_limit(clip):
    with pytest.raises(SourceError, match=f"video {clip}: its 320x240 frames are 76,800 pixels, over the limit "
                                          "of 76,799"):
        open_source(clip, max_pixels=76_799)
    open_source(clip, max_pixels=76_800).close()


def test_calibration_folder_skips_bad_files_one_line_each(photo_paths, tmp_path, caplog):
    """Fails on the old code: cv2.error from the 60000x60000 PNG ended the build."""
    from u2edge.export.build import split_calibration

    folder = tmp_path / "calib"
    folder.mkdir()
    for path in photo_paths:
        shutil.copy(path, folder / path.name)
    bad = {"huge.png": png_header(60000, 60000), "bomb.png": png_bomb(12085, 12085), "empty.jpg": b"",
           "text.png": b"calibration notes\n"}
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    with caplog.at_level(logging.WARNING, logger="u2edge"):
        calibration, held_out = split_calibration(folder, 32)
    assert sorted(p.name for p in calibration + held_out) == sorted(p.name for p in photo_paths)
    for name in bad:
        assert sum(str(folder / name) in record.getMessage() for record in caplog.records) == 1, name


def test_bench_leaves_out_unreadable_images_one_line_each(photo_paths, tmp_path):
    from u2edge.bench.run import BenchOptions, readable_images

    huge, text = tmp_path / "huge.png", tmp_path / "notes.jpg"
    huge.write_bytes(png_header(60000, 60000))
    text.write_bytes(b"not a photo\n")
    opts = BenchOptions(images=[photo_paths[0], huge, photo_paths[1], text])
    assert readable_images(opts) == [photo_paths[0], photo_paths[1]]
    assert [line.split(": ")[0] for line in opts.errors] == [str(huge), str(text)]
