"""Compiled (numba) functions: whether numba can run, how a kernel is compiled and cached, and
built once under a lock.

``numba`` is imported on first use only (``stack --help``, :mod:`stacker.layout` and small metrics
never load it).
"""

from __future__ import annotations


def available() -> bool:
    """True when numba can be imported (a compiled kernel can run)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def installed() -> bool:
    """True when numba is installed, found without importing it (a test that costs nothing)."""
    import importlib.util

    return importlib.util.find_spec("numba") is not None


def build_once(kernels: dict, lock, build) -> dict:
    """``kernels`` filled with ``build()`` on the first call (under ``lock``: threads that load
    the kernels at once build them once)."""
    with lock:
        if not kernels:
            kernels.update(build())
    return kernels


def jit(func, **options):
    """``func`` compiled with numba's ``options`` (``error_model`` ...), its machine code cached on
    disk where numba finds a writable place (the package's ``__pycache__``, ``NUMBA_CACHE_DIR``,
    the user's cache folder); with none (a read-only install and an unusable HOME) compiled for
    this process only, instead of failing."""
    import numba

    try:
        return numba.njit(nogil=True, cache=True, **options)(func)
    except RuntimeError as error:
        if "cannot cache" not in str(error):
            raise
        return numba.njit(nogil=True, **options)(func)
