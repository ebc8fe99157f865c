"""``EngineCache``: a built model at its output path, with its identity and its lock.

The identity hashes everything that determines the model (``identity_inputs``); the same build
twice reuses the model, and any change rebuilds it. A lock file beside the output serialises
concurrent builds of it (and goes when the build ends); the plan and its sidecar are written
atomically.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from .._files import locked, write_bytes_atomic
from ..identity import identity_hash
from ..sidecar import CorruptSidecarError, Sidecar
from ..weights import sha256_file

__all__ = ["EngineCache"]

log = logging.getLogger("u2edge")


class EngineCache:
    """The model at ``output`` as the build of ``identity_inputs`` (a JSON-able dict) makes it."""

    def __init__(self, output: Path, identity_inputs: dict) -> None:
        self.output = Path(output)
        self.identity_inputs = identity_inputs
        self.identity = identity_hash(identity_inputs)
        self.lock_path = self.output.with_name(f".{self.output.name}.lock")

    def locked(self) -> contextlib.AbstractContextManager:
        """Hold the output's build lock: look for a reusable model and store a new one under it.
        Waiting for another build logs "waiting for another build of OUTPUT" first."""
        return locked(self.lock_path, lambda: log.info("waiting for another build of %s to finish (it holds %s)",
                                                       self.output, self.lock_path))

    def reusable(self) -> Sidecar | None:
        """The sidecar of the model at ``output`` when it is this identity's and intact; None when
        it must be built (missing, unknown, another identity, altered, or its sidecar corrupt)."""
        if not self.output.exists():
            return None
        try:
            sidecar = Sidecar.read(self.output)
        except CorruptSidecarError as exc:
            log.warning("the sidecar %s is corrupt (%s): rebuilding %s", exc.path, exc.why, self.output)
            return None
        if sidecar is None:
            log.info("%s has no sidecar, so it is an unknown engine: rebuilding it", self.output)
            return None
        if sidecar.identity != self.identity or sidecar.engine_sha256 != sha256_file(self.output):
            return None
        log.info("%s is up to date (identity %s); a forced build replaces it", self.output, self.identity)
        return sidecar

    def store(self, data: bytes, sidecar: Sidecar) -> Sidecar:
        """Write the model and its sidecar, stamped with this identity."""
        sidecar.identity, sidecar.identity_inputs = self.identity, self.identity_inputs
        # the old sidecar goes first: a model and a sidecar that disagree are never left together
        Sidecar.path_for(self.output).unlink(missing_ok=True)
        write_bytes_atomic(self.output, data)
        sidecar.write(self.output)
        return sidecar
