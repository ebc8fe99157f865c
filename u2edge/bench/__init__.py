"""``u2edge bench``: speed, memory and accuracy of every configuration this machine can run,
beside rembg and the PyTorch reference, measured in one run on the same images.

Each configuration runs in its own process (``worker``), so that its peak memory is its own and
one runtime's thread pools do not slow the next. rembg runs in its own virtual environment
(``rembg_peer``), so its pinned dependencies never touch u2edge's.
"""

__all__ = []
