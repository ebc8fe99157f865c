"""u2edge: U-2-Net salient-object masks on NVIDIA edge hardware, with a CPU fallback."""

__version__ = "0.1.0"

from .engine import U2EdgeEngine  # noqa: E402
from .errors import U2EdgeError  # noqa: E402
from .images import read_image, to_bgr8  # noqa: E402
from .video import Pipeline, stream  # noqa: E402

__all__ = ["__version__", "U2EdgeEngine", "U2EdgeError", "read_image", "to_bgr8", "stream", "Pipeline"]
