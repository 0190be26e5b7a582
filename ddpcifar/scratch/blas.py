"""Read and set the number of threads of the OpenBLAS that NumPy uses, without extra packages.

Why: on a busy machine with few cores, OpenBLAS threads spin while they wait for each other, so with
other processes competing for the cores two BLAS threads can be several times slower than one.
The trainer and the benchmark therefore make the thread count explicit. Works for the OpenBLAS
builds that NumPy wheels bundle (symbol names with or without the `scipy_` prefix); anything
else reports None and is left alone.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np  # noqa: F401  (loads NumPy's BLAS into the process first)

_PREFIXES = ("scipy_openblas", "openblas")
_SUFFIXES = ("64_", "_64_", "")


def _library() -> ctypes.CDLL | None:
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split()[-1]
        if "openblas" in Path(path).name.lower():
            return ctypes.CDLL(path)
    return None


def _function(name: str):  # -> ctypes function or None
    lib = _library()
    if lib is None:
        return None
    for prefix in _PREFIXES:
        for suffix in _SUFFIXES:
            fn = getattr(lib, f"{prefix}_{name}{suffix}", None)
            if fn is not None:
                return fn
    return None


def get_blas_threads() -> int | None:
    """Threads OpenBLAS uses for one call, or None when NumPy's BLAS is not a known OpenBLAS."""
    try:
        fn = _function("get_num_threads")
    except OSError:
        return None
    return None if fn is None else int(fn())


def set_blas_threads(n: int) -> bool:
    """Set OpenBLAS's thread count; False when it cannot be controlled here."""
    try:
        fn = _function("set_num_threads")
    except OSError:
        return False
    if fn is None:
        return False
    fn(ctypes.c_int(n))
    return get_blas_threads() == n
