"""Video: frame sources and sinks by URI, and the pipeline that runs them through an engine."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from .pipeline import Pipeline, Stats
from .sinks import PerFileSink, Sink, open_sink
from .sources import CaptureOptions, ImageSequenceSource, Source, open_source

__all__ = ["stream", "Pipeline", "Stats", "Source", "Sink", "open_source", "open_sink", "CaptureOptions",
           "ImageSequenceSource", "PerFileSink"]


def stream(source: str | int | os.PathLike | Source, engine=None, **pipeline_options) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(frame, mask) for every frame of a source, newest-first if it is live:

        for frame, mask in u2edge.stream("/dev/video0"):
            ...

    ``engine`` is a ``U2EdgeEngine`` (default: a new one on the official U2-NetP, closed at the end).
    """
    from ..engine import U2EdgeEngine

    src = source if isinstance(source, Source) else open_source(source)
    own = engine is None
    engine = U2EdgeEngine() if own else engine
    try:
        yield from Pipeline(src, engine, **pipeline_options)
    finally:
        src.close()
        if own:
            engine.close()
