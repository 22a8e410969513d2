"""Weighted sums of float64 member transforms, in one pass over the members.

:meth:`stacker.search.methods.core.CountBlends.predict` (every number a search reports) computes
``t_0 * w_0``, then adds ``t_m * w_m`` member by member: numpy writes and reads the running sum and
a temporary once per member. :func:`weighted_sum` does the same operations on each element (one
multiplication and one addition per member, in member order, each rounded to float64, no fused
multiply-add) four members at a time, so the result is bit-identical with a quarter of the memory
traffic; without numba it is the numpy chain itself.
"""

from __future__ import annotations

import threading

import numpy as np

import stacker.search.kernel as kernel

_KERNELS: dict = {}
_LOCK = threading.Lock()


def _compile():
    return kernel.build_once(_KERNELS, _LOCK, _build)["add_members"]


def _build() -> dict:
    def add_members(total, t0, t1, t2, t3, w, n, first, rows, divisor):  # pragma: no cover
        """total[i] (= if not first: total[i] +) t0[r] * w[0] + ... for n members,
        r = rows[i] (every row in order when rows is empty); then divided by ``divisor``
        when it is not 0 (the last group of members: numpy's in-place division, fused)."""
        gather = rows.shape[0] > 0
        for i in range(total.shape[0]):
            r = rows[i] if gather else i
            out = total[i]
            a0 = t0[r]
            a1 = t1[r]
            a2 = t2[r]
            a3 = t3[r]
            for c in range(out.shape[0]):
                if first:
                    acc = a0[c] * w[0]
                else:
                    acc = out[c] + a0[c] * w[0]
                if n > 1:
                    acc = acc + a1[c] * w[1]
                if n > 2:
                    acc = acc + a2[c] * w[2]
                if n > 3:
                    acc = acc + a3[c] * w[3]
                if divisor != 0.0:
                    acc = acc / divisor
                out[c] = acc

    return {"add_members": kernel._jit(add_members)}


def weighted_sum(members: list, weights: np.ndarray, rows=slice(None),
                 out: np.ndarray | None = None, divisor: float | None = None) -> np.ndarray:
    """``members[0][rows] * weights[0] + members[1][rows] * weights[1] + ...`` (added in that
    order), float64 of shape (n_selected_rows, n_classes), then ``/= divisor`` when one is
    given (fused with the last additions: the same division of the same sums). members:
    float64 (n_rows, n_classes) arrays; rows: a slice(None), a boolean mask or row indices;
    out: a float64 array of that shape to write the sum into (returned), else a new one."""
    weights = np.asarray(weights, dtype=np.float64)
    if divisor is not None and not float(divisor):
        raise ValueError("divisor must not be 0")
    if not kernel.available() or members[0].ndim != 2:
        total = np.multiply(members[0][rows], weights[0], out=out)
        for t, weight in zip(members[1:], weights[1:]):
            total += t[rows] * weight
        if divisor is not None:
            total /= divisor
        return total
    members = [np.ascontiguousarray(t, dtype=np.float64) for t in members]
    n_rows, n_classes = members[0].shape
    if isinstance(rows, slice) and rows == slice(None):
        index = np.zeros(0, dtype=np.int64)
        n_out = n_rows
    else:
        index = np.asarray(rows)
        index = np.flatnonzero(index) if index.dtype == bool else index.astype(np.int64)
        n_out = len(index)
        if n_out == 0:
            return np.zeros((0, n_classes))
    if out is None:
        total = np.empty((n_out, n_classes), dtype=np.float64)
    elif out.shape != (n_out, n_classes) or out.dtype != np.float64 or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous float64 of shape {(n_out, n_classes)}")
    else:
        total = out
    run = _compile()
    for start in range(0, len(members), 4):
        group = members[start:start + 4]
        n = len(group)
        group = group + [group[0]] * (4 - n)
        last = start + 4 >= len(members)
        run(total, *group, np.ascontiguousarray(weights[start:start + 4]), n, start == 0, index,
            float(divisor) if last and divisor is not None else 0.0)
    return total


def warm_up() -> None:
    """Call the kernel once on a toy sum (its first call loads it from numba's cache)."""
    if kernel.available():
        weighted_sum([np.ones((2, 2)), np.ones((2, 2))], np.ones(2), np.array([1]))
