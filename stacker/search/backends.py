"""Which engine scores the candidates of the subset search: ``--device auto|cpu|cuda``.

- lwlrap / lrap on the CPU: the compiled kernel (:mod:`stacker.search.kernel`, numba) when numba
  is installed, else the numpy scorer.
- lwlrap / lrap on a CUDA device: the torch path (:mod:`stacker.search.torch_scoring`).
- any other metric: the generic numpy scorer, whatever the device.

Every path gives bit-identical scores, so the device changes the speed, never the result.
``auto`` looks for an NVIDIA driver before importing torch (importing torch takes a second).
"""

from __future__ import annotations

import os

import numpy as np

from stacker.errors import OptionError
from stacker.search.scoring import RankScorer

DEVICES = ("auto", "cpu", "cuda")


def _driver_present() -> bool:
    return os.path.exists("/proc/driver/nvidia/version")


def cuda_device(device: str) -> str:
    """The torch device name for ``device`` ("cuda" or "cuda:N"); raises OptionError without
    CUDA."""
    import torch

    if not torch.cuda.is_available():
        raise OptionError(f"--device {device}: no CUDA device is available to torch "
                          "(torch.cuda.is_available() is False); use --device cpu or auto")
    return device


def resolve_device(device: str) -> str:
    """'cpu' or a CUDA device name for ``device`` (auto, cpu, cuda, cuda:N)."""
    device = str(device)
    if device == "cpu":
        return "cpu"
    if device == "auto":
        if not _driver_present():
            return "cpu"
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        return cuda_device(device)
    raise OptionError(f"unknown device '{device}'; choose one of: {', '.join(DEVICES)} (or cuda:N)")


def make_walker(q: np.ndarray, scorer, device: str = "auto", n_jobs: int = 1):
    """(walker or None, backend name) for scoring ``q`` with ``scorer`` on ``device``."""
    resolved = resolve_device(device)
    if not isinstance(scorer, RankScorer):
        return None, f"numpy ({scorer.metric.name} has no compiled path)"
    if resolved != "cpu":
        from stacker.search.torch_scoring import TorchWalker

        walker = TorchWalker(q, scorer, device=cuda_device(resolved))
        return walker, walker.name
    from stacker.search import kernel

    if kernel.available():
        return kernel.KernelWalker(q, scorer, n_jobs=n_jobs), "numba"
    return None, "numpy (numba is not installed)"
