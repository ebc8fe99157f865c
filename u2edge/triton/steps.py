"""What the Python-backend models of a u2edge Triton repository do, as functions of numpy arrays.

The ``model.py`` files (``models/``) only move tensors in and out of Triton and call these, so the
server runs u2edge's own preprocessing, network backend and postprocessing, as ``U2EdgeEngine`` does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..engine import U2EdgeEngine
from ..errors import ImageError
from ..processing import Preprocessing, postprocess, preprocess

__all__ = ["parameters", "dims", "preprocessing", "network_input", "frame_mask", "open_network", "run_network"]


def parameters(config: Mapping) -> dict[str, str]:
    """The string parameters of a model config, as Triton gives it to a Python model (JSON)."""
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def dims(config: Mapping, section: str, name: str) -> tuple[int, ...]:
    """The dims of the tensor ``name`` in the config's ``section`` ("input" or "output")."""
    return next(tuple(int(d) for d in t["dims"]) for t in config[section] if t["name"] == name)


def preprocessing(config: Mapping) -> Preprocessing:
    """The preprocessing that ``u2edge triton repo`` wrote into the config's parameters."""
    return Preprocessing.from_metadata(parameters(config))


def network_input(frame: np.ndarray, spec: Preprocessing, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """u2edge_pre: one HxWx3 uint8 BGR frame as the network input of ``shape`` (B, 3, S, S): the
    frame in row 0, any other rows zero (as ``U2EdgeEngine`` pads a fixed batch); and (h, w)."""
    tensor = np.zeros(tuple(shape), np.float32)
    preprocess(frame, spec, out=tensor[0])
    return tensor, np.array(frame.shape[:2], np.int32)


def frame_mask(output: np.ndarray, size: np.ndarray) -> np.ndarray:
    """u2edge_post: row 0 of the network's output as a float32 mask of ``size`` (h, w)."""
    size = np.asarray(size).reshape(-1)
    if size.shape != (2,) or (size < 1).any():
        raise ImageError(f"SIZE {size.tolist()} is not a frame's (height, width)")
    return postprocess(output[0], int(size[0]), int(size[1]))


def open_network(folder: str | os.PathLike, params: Mapping[str, str]) -> U2EdgeEngine:
    """u2edge_network (Python): the copied model, on the backend and at the precision chosen when
    the repository was written."""
    return U2EdgeEngine(Path(folder) / params["u2edge.model_file"], backend=params["u2edge.backend"],
                        precision=params["u2edge.precision"])


def run_network(engine: U2EdgeEngine, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
    """u2edge_network (Python): each request's (N, 3, S, S) input -> its (N, 1, S, S) output. The
    requests that Triton's dynamic batching gathered run ``engine.max_batch`` frames at a time."""
    joined = np.concatenate(batches) if len(batches) > 1 else batches[0]
    step = engine.max_batch
    out = np.concatenate([engine.backend.infer(joined[i:i + step]) for i in range(0, len(joined), step)])[:, None]
    return np.split(out, np.cumsum([len(b) for b in batches])[:-1])
