"""The SOD metrics, checked against PySODMetrics on real masks and edge cases."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from conftest import PHOTOS, run_cli
from u2edge.metrics import SODMetrics, normalize_pair

M = pytest.importorskip("py_sod_metrics", reason="pysodmetrics checks the metrics: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def cases(engine, photos):
    """Real predictions against shifted, eroded and dilated versions of themselves, plus edge cases."""
    rng = np.random.default_rng(0)
    out = []
    for i, name in enumerate(PHOTOS):
        mask = engine(photos[name])
        pred = np.rint(mask * 255).astype(np.uint8)
        binary = (mask > 0.5).astype(np.uint8) * 255
        gt = (np.roll(binary, 9, axis=1), cv2.erode(binary, np.ones((15, 15), np.uint8)),
              cv2.dilate(binary, np.ones((15, 15), np.uint8)), binary, np.roll(binary, -20, axis=0))[i]
        out.append((pred, gt))
    out.append(((rng.random((40, 50)) * 255).astype(np.uint8), np.zeros((40, 50), np.uint8)))
    out.append(((rng.random((40, 50)) * 255).astype(np.uint8), np.full((40, 50), 255, np.uint8)))
    out.append((np.full((30, 30), 77, np.uint8), (rng.random((30, 30)) > 0.7).astype(np.uint8) * 255))
    return out


def test_metrics_equal_pysodmetrics(cases):
    ours = SODMetrics()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PySODMetrics deprecates Fmeasure in favour of FmeasureV2
        fm, sm, em, mae = M.Fmeasure(), M.Smeasure(), M.Emeasure(), M.MAE()
    for pred, gt in cases:
        ours.add(pred, gt)
        for metric in (fm, sm, em, mae):
            metric.step(pred, gt)
    got = ours.results()
    e_curve = em.get_results()["em"]["curve"]
    want = {"max_f": fm.get_results()["fm"]["curve"].max(), "mae": mae.get_results()["mae"],
            "s_measure": sm.get_results()["sm"], "mean_e": e_curve.mean(), "max_e": e_curve.max()}
    for key, value in want.items():
        assert got[key] == pytest.approx(float(value), abs=1e-9), key
    assert got["images"] == len(cases)


def test_perfect_and_inverted_predictions():
    gt = np.zeros((60, 80), np.uint8)
    gt[20:40, 30:60] = 255
    perfect = SODMetrics()
    perfect.add(gt, gt)
    r = perfect.results()
    assert r["mae"] == 0 and r["max_f"] == pytest.approx(1) and r["s_measure"] == pytest.approx(1)
    inverted = SODMetrics()
    inverted.add(255 - gt, gt)
    assert inverted.results()["mae"] == 1 and inverted.results()["s_measure"] < 0.1


def test_sizes_must_match():
    with pytest.raises(ValueError, match="differ in size"):
        normalize_pair(np.zeros((4, 4)), np.zeros((4, 5)))


def test_eval_cli_on_real_photos(tmp_path, engine, photos, photo_paths):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for path in photo_paths:
        (images / path.name).write_bytes(path.read_bytes())
        mask = engine(photos[path.name])
        cv2.imwrite(str(masks / f"{path.stem}.png"), ((mask > 0.5) * 255).astype(np.uint8))
    proc = run_cli("eval", "--images", images, "--masks", masks, "--json")
    import json

    result = json.loads(proc.stdout)
    assert result["images"] == len(photo_paths)
    # the model against its own thresholded masks: nearly perfect, but not trivially so
    assert result["max_f"] > 0.99 and result["mae"] < 0.05 and result["s_measure"] > 0.9
    table = run_cli("eval", "--images", images, "--masks", masks).stdout
    assert "maxF" in table and "MAE" in table and "S_m" in table
    (masks / "coffee.png").unlink()
    proc = run_cli("eval", "--images", images, "--masks", masks, check_rc=1)
    assert "coffee.png: no mask named coffee.*" in proc.stderr
    proc = run_cli("eval", "--images", tmp_path / "nope", "--masks", masks, check_rc=1)
    assert "is not a folder" in proc.stderr
