"""Atomic writes: a new file gets the mode that open() would give it under the umask the process
has when it writes, and finding that mode never changes the umask (os.umask(0), even for a moment,
gives every file another thread creates meanwhile mode 0666)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

from u2edge import _files
from u2edge._files import default_mode, write_bytes_atomic


@pytest.fixture
def umask():
    """Set this process's umask for one test; the old one comes back after it."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)], ids=oct)
def test_a_written_file_gets_the_mode_of_the_umask_at_write_time(tmp_path, umask, mask, mode):
    umask(mask)
    path = write_bytes_atomic(tmp_path / "mask.bin", b"mask")
    (tmp_path / "plain").write_bytes(b"")  # what open() gives a new file here
    assert stat.S_IMODE(path.stat().st_mode) == mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert default_mode() == mode
    assert path.read_bytes() == b"mask" and sorted(p.name for p in tmp_path.iterdir()) == ["mask.bin", "plain"]


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640)], ids=oct)
def test_without_proc_the_mode_is_read_from_a_new_file(umask, mask, mode):
    umask(mask)  # the fallback where /proc/self/status has no Umask line (not Linux, or a kernel before 4.7)
    assert _files._probe_mode() == mode


def test_finding_the_mode_never_calls_os_umask(tmp_path):
    code = textwrap.dedent(f"""
        import os
        calls, real = [], os.umask
        os.umask = lambda mask: calls.append(oct(mask)) or real(mask)
        import u2edge, u2edge.cli, u2edge._files as files
        files.default_mode()
        files.write_bytes_atomic({str(tmp_path / "out.bin")!r}, b"out")
        print(calls)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[]\n"


def test_a_write_killed_with_sigkill_leaves_nothing_after_the_next_write(tmp_path):
    """kill -9 skips every finally: the next write of the same file removes what the dead writer left,
    and keeps a temp file whose writer still runs."""
    target = tmp_path / "mask.png"
    code = ("import os, signal, sys\nfrom pathlib import Path\nfrom u2edge._files import partial_file\n"
            "fd, tmp = partial_file(Path(sys.argv[1]))\nos.write(fd, b'half a PNG')\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    (orphan,) = tmp_path.iterdir()
    assert orphan.name.startswith(".mask.png.") and orphan.name.endswith(".partial")
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE) as alive:
        busy = tmp_path / f".mask.png.{alive.pid}.abcdefgh.partial"  # another writer, still running
        busy.write_bytes(b"in progress")
        write_bytes_atomic(target, b"the whole file")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([busy.name, "mask.png"])
        alive.communicate(b"")
    assert target.read_bytes() == b"the whole file"


def test_a_temp_folder_a_killed_process_left_is_removed_by_the_next_one(tmp_path, monkeypatch):
    monkeypatch.setattr(_files.tempfile, "tempdir", str(tmp_path))
    code = ("import os, signal\nfrom u2edge._files import temp_folder\n"
            "with temp_folder('u2edge-build') as folder:\n    (folder / 'fp32.onnx').write_bytes(b'half')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert proc.returncode == -signal.SIGKILL
    (orphan,) = tmp_path.iterdir()
    with _files.temp_folder("u2edge-build") as folder:
        assert [p.name for p in tmp_path.iterdir()] == [folder.name]
    assert list(tmp_path.iterdir()) == []
