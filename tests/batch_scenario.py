"""Drive one Ray scenario: commands run one after the other (``u2edge batch``, ``ray start --head``,
``ray stop``), and a JSON record of what each printed and how it ended.

Run it inside private network and PID namespaces (tests/test_batch.py does), with the Python that has
u2edge and Ray:

    unshare --pid --fork --mount-proc unshare -n sh -c 'ip link set lo up && exec "$@"' - \\
        python tests/batch_scenario.py spec.json result.json

spec.json: ``{"steps": [{"name": ..., "argv": [...], "env": {...}}, ...], "finally": [...same...],
"deadline": S}``. Each step runs to its end before the next starts; the ``finally`` steps run even
when one failed. No wait is a sleep: each waits for its process's exit, up to the deadline
(seconds, for the whole run), when it is killed; a step killed so is recorded in ``"failure"``.

This process is PID 1 of its namespace: the daemons that ``ray start`` leaves are its children once
that exits, so it reaps every process that ends (``ray stop`` waits for them to be gone), and when it
exits the kernel ends whatever is left. ``ray stop`` sees this namespace's processes only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

from netns import driver_main


def run_step(step: dict, deadline: float) -> dict:
    """Run one step to its end (killed at the deadline); its record."""
    env = {**os.environ, **step.get("env", {})}
    proc = subprocess.Popen(step["argv"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def read(stream: str) -> None:
        for line in getattr(proc, stream):
            lines[stream].append(line.rstrip("\n"))

    readers = [threading.Thread(target=read, args=(s,), daemon=True) for s in lines]
    for reader in readers:
        reader.start()
    killed = threading.Event()

    def kill() -> None:  # not proc.kill(): its poll() would reap the step behind the loop's back
        killed.set()
        os.kill(proc.pid, signal.SIGKILL)

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), kill)
    timer.start()
    try:
        while True:  # reap everything that ends: our step, and the orphans re-parented to PID 1
            pid, status = os.waitpid(-1, 0)
            if pid == proc.pid:
                break
    finally:
        timer.cancel()
    proc.returncode = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
    for reader in readers:  # a daemon that kept the step's stdout open would hold it: not past the deadline
        reader.join(max(0.0, deadline - time.monotonic()))
    return {"name": step["name"], "argv": step["argv"], "returncode": proc.returncode,
            "killed": killed.is_set(), **lines}


def run(spec: dict) -> dict:
    deadline = time.monotonic() + spec.get("deadline", 240)
    records, failure = [], None
    try:
        for step in spec["steps"]:
            records.append(run_step(step, deadline))
            if records[-1]["killed"]:
                failure = f"step {step['name']!r} did not end before the deadline"
                break
    finally:
        for step in spec.get("finally", []):  # given time of their own: they clean up
            records.append(run_step(step, time.monotonic() + 60))
    return {"failure": failure, "steps": {record["name"]: record for record in records}}


if __name__ == "__main__":
    driver_main(run)
