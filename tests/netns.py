"""Servers in tests (RTSP, ROS 2/DDS, later Triton and Ray) run inside a private network namespace
that holds only loopback, so nothing can leave the machine whatever a library's defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

__all__ = ["private_network", "require_private_network", "private_env", "PRIVATE_ENV", "driver_main"]

# DDS discovers peers on this host only; a multicast that could leave the namespace would fail anyway
PRIVATE_ENV = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "RAY_USAGE_STATS_ENABLED": "0"}


def private_network(argv: list[str]) -> list[str]:
    """``argv`` run in a new network namespace whose only interface is loopback, brought up."""
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "u2edge-netns", *map(str, argv)]


def require_private_network() -> None:
    """Skip unless a private network namespace can be made here (root, or user namespaces)."""
    probe = subprocess.run(private_network(["ip", "-o", "link", "show", "up"]), capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a private network namespace here (unshare -n needs root): {probe.stderr.strip()}")
    links = [line.split(":")[1].strip() for line in probe.stdout.splitlines()]
    assert links == ["lo"], f"the private namespace should hold only loopback, holds {links}"


def private_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **PRIVATE_ENV, **extra}


def driver_main(run: Callable[[dict], dict]) -> None:
    """The main of a scenario driver run inside the namespace: ``DRIVER SPEC.json RECORD.json`` writes
    ``run(spec)`` as the record, for the test to assert on."""
    spec_path, record_path = map(Path, sys.argv[1:])
    record_path.write_text(json.dumps(run(json.loads(spec_path.read_text())), indent=2))
    sys.exit(0)
