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


def cuda_present() -> bool:
    """True when torch sees a CUDA device (torch is imported only where a driver is installed)."""
    if not _driver_present():
        return False
    import torch

    return bool(torch.cuda.is_available())


def check_device(device: str) -> str:
    """``device`` if it is one of auto, cpu, cuda, cuda:N; raises OptionError otherwise."""
    device = str(device)
    if device in DEVICES or device.startswith("cuda:"):
        return device
    raise OptionError(f"unknown device '{device}'; choose one of: {', '.join(DEVICES)} (or cuda:N)")


def compiled_path_likely(metric, device: str) -> bool:
    """True when a search with ``metric`` (a name or a Metric) on ``device`` will score with the
    compiled kernel (lwlrap or lrap on the CPU), judged without importing torch or numba."""
    from stacker.search.scoring import FAST_METRICS

    device = str(device)
    return getattr(metric, "name", metric) in FAST_METRICS and (device == "cpu" or (device == "auto"
                                                          and not _driver_present()))


def make_walker(q: np.ndarray, scorer, device: str = "auto", n_jobs: int = 1, *,
                placed=None, source=None, exact_row=None):
    """(walker or None, backend name) for scoring ``q`` with ``scorer`` on ``device``.

    cpu, or auto without CUDA: the compiled kernel (numpy if numba is missing); cuda, cuda:N, or
    auto with CUDA: torch on that device. Other metrics than lwlrap/lrap: numpy (None).
    placed, source, exact_row: for the row-major pool's walker (:class:`stacker.search.row_major.RowWalker`).
    """
    device = check_device(device)
    on_cpu = device == "cpu" or (device == "auto" and not cuda_present())
    if not on_cpu:
        torch_device = cuda_device("cuda" if device == "auto" else device)
    if not isinstance(scorer, RankScorer):
        return None, f"numpy ({scorer.metric.name} has no compiled path)"
    if not on_cpu:
        from stacker.search.torch_scoring import TorchWalker

        walker = TorchWalker(q, scorer, device=torch_device)
        return walker, walker.name
    import stacker.search.kernel as kernel

    if kernel.available():
        from stacker.search.row_major import RowWalker, is_row_major

        if is_row_major(q):
            return (RowWalker(q, scorer, n_jobs=n_jobs, placed=placed, source=source,
                              exact_row=exact_row), "numba")
        return kernel.KernelWalker(q, scorer, n_jobs=n_jobs), "numba"
    return None, "numpy (numba is not installed)"
