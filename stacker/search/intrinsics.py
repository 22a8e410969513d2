"""Small compiled helpers of the row-major walker's kernels (:mod:`stacker.search.row_major`),
imported when they are compiled (this module imports numba).

* :func:`prefetch`: ``llvm.prefetch`` of one array element (a hint: the cache starts loading its
  line; nothing else changes).
* :func:`units` and :func:`diff`: the comparisons of high parts in the pool's own integer type.
  For an int32 pool ``(H_c - H_p) * 2**shift >= x`` is ``H_c - H_p >= ceil(x / 2**shift)``, both
  sides int32 (the differences of high parts fit: ``row_major.HIGH_BITS``), twice the lanes of
  int64 comparisons; for an int64 pool (shift 0, the values) they are the int64 ones.
"""

from __future__ import annotations

import numba  # noqa: F401 (first, whole: another thread may be importing it, see kernel.preload)
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, overload

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@intrinsic
def prefetch(typingctx, array, index):
    """Ask the cache for the line of ``array[index]`` (read, kept close: prefetcht0)."""
    if not isinstance(array, types.Array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]],
                                           wraparound=False)
        byte_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        signature_ir = ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32])
        function = cgutils.get_or_insert_function(builder.module, signature_ir,
                                                  "llvm.prefetch.p0i8")
        builder.call(function, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


def units(x, shift, like):
    """``ceil(x / 2**shift)`` in the integer type of the array ``like`` (int32: clamped to its
    range, which keeps every comparison with an int32 difference as it was)."""
    t = -((-x) >> shift)
    if like.dtype == np.int32:
        return np.int32(min(max(t, INT32_MIN), INT32_MAX))
    return np.int64(t)


def diff(a, b, like):
    """``a - b`` in the integer type of the array ``like``."""
    return np.int32(a - b) if like.dtype == np.int32 else np.int64(a) - np.int64(b)


@overload(units)
def _units(x, shift, like):
    if like.dtype == types.int32:
        def clamped(x, shift, like):
            t = -((-x) >> shift)
            return np.int32(min(max(t, INT32_MIN), INT32_MAX))
        return clamped
    return lambda x, shift, like: np.int64(-((-x) >> shift))


@overload(diff)
def _diff(a, b, like):
    if like.dtype == types.int32:
        return lambda a, b, like: np.int32(a - b)
    return lambda a, b, like: np.int64(a) - np.int64(b)
