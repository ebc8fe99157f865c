"""Serving u2edge models with NVIDIA Triton Inference Server: the model repository (``repo``)."""

from .repo import RepoOptions, RepoResult, write_repo

__all__ = ["RepoOptions", "RepoResult", "write_repo"]
