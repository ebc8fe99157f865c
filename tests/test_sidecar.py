"""``Sidecar``, the one reader and writer of sidecar JSON: a missing sidecar is an unknown model,
a corrupt one is an error naming the file and the fix."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from u2edge.errors import IncompatibleEngineError
from u2edge.sidecar import CPU_MODEL_FORMAT, ENGINE_FORMAT, CorruptSidecarError, Sidecar


def test_a_missing_sidecar_is_none(tmp_path):
    assert Sidecar.path_for(tmp_path / "m.engine") == tmp_path / "m.engine.json"
    assert Sidecar.read(tmp_path / "m.engine") is None


def test_what_is_written_reads_back_field_by_field(tmp_path):
    side = Sidecar(precision="int8", arch="u2net", targets=["sm86"], engine_bytes=12, build_seconds=1.5,
                   tensorrt={"flavour": "tensorrt_rtx", "version": "1.7"}, inputs=[{"name": "input"}])
    assert side.write(tmp_path / "m.engine") == tmp_path / "m.engine.json"
    data = json.loads((tmp_path / "m.engine.json").read_text())
    assert list(data)[0] == "format" and data["format"] == ENGINE_FORMAT and data["device"] is None
    assert Sidecar.read(tmp_path / "m.engine") == side
    assert [p.name for p in tmp_path.iterdir()] == ["m.engine.json"]  # written atomically: no temp file left


def test_unknown_keys_are_ignored(tmp_path):
    (tmp_path / "m.onnx.json").write_text(json.dumps({"format": CPU_MODEL_FORMAT, "model": "u2netp",
                                                      "precision": "int8", "from_the_future": [1]}))
    assert Sidecar.read(tmp_path / "m.onnx") == Sidecar(format=CPU_MODEL_FORMAT, precision="int8")


@pytest.mark.parametrize("text, why", [
    ("", "not JSON: Expecting value: line 1 column 1 (char 0)"),
    ('{"format": "u2edge-engine-sidecar/1", ', "not JSON: Expecting property name"),
    (b"\xff\xfe{}", "not JSON: 'utf-8' codec can't decode"),
    ("[1, 2]", "a JSON array, not an object"),
    ('"fp16"', "a JSON string, not an object"),
    ("{}", "format None is not one of u2edge-engine-sidecar/1, u2edge-cpu-model/1"),
    ('{"format": "u2edge-engine-sidecar/9"}', "format 'u2edge-engine-sidecar/9' is not one of"),
    ('{"format": "u2edge-engine-sidecar/1", "engine_bytes": "12"}', "engine_bytes is a JSON string, not number"),
    ('{"format": "u2edge-engine-sidecar/1", "engine_bytes": true}', "engine_bytes is a JSON boolean, not number"),
    ('{"format": "u2edge-engine-sidecar/1", "targets": "sm86"}', "targets is a JSON string, not array"),
    ('{"format": "u2edge-engine-sidecar/1", "tensorrt": ["tensorrt", "10"]}', "tensorrt is a JSON array, not object"),
    ('{"format": "u2edge-engine-sidecar/1", "build_seconds": "1.5"}',
     "build_seconds is a JSON string, not number"),
])
def test_a_corrupt_sidecar_is_an_error_naming_the_file_and_the_fix(tmp_path, text, why):
    engine = tmp_path / "m.engine"
    path = tmp_path / "m.engine.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(CorruptSidecarError) as info:
        Sidecar.read(engine)
    error = info.value
    assert isinstance(error, IncompatibleEngineError) and error.path == path and error.why.startswith(why)
    assert str(error).startswith(f"the sidecar {path} is corrupt ({why}")
    assert str(error).endswith(f"so m.engine cannot be checked; rebuild it (u2edge build ... -o {engine} --force), "
                               f"or delete {path} to load it unchecked")
    assert "\n" not in str(error)


def test_an_unreadable_sidecar_is_an_error(tmp_path):
    (tmp_path / "m.engine.json").mkdir()
    with pytest.raises(CorruptSidecarError, match=r"m\.engine\.json is corrupt \(cannot read it: Is a directory\)"):
        Sidecar.read(tmp_path / "m.engine")


def test_the_cpu_model_cache_makes_a_model_with_a_corrupt_sidecar_again(tmp_path, monkeypatch, official_onnx,
                                                                          caplog):
    pytest.importorskip("onnx", reason="making the CPU INT8 model needs onnx")
    from u2edge.cpu import int8_model

    monkeypatch.setenv("U2EDGE_CACHE", str(tmp_path))
    shutil.copy(official_onnx, tmp_path / "u2netp.onnx")
    path = int8_model("u2netp")
    made = Sidecar.read(path)
    assert made.format == CPU_MODEL_FORMAT and made.arch == "u2netp" and made.engine_bytes == path.stat().st_size
    Sidecar.path_for(path).write_text("{truncated")
    with caplog.at_level(logging.WARNING, logger="u2edge"):
        assert int8_model("u2netp") == path
    assert "does not match its sidecar; making it again" in caplog.text
    assert Sidecar.read(path) == made
