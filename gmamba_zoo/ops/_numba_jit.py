"""``numba.njit`` with the on-disk cache where numba finds a writable cache directory, without it elsewhere.

Every compiled function of the package is decorated through :func:`cached_njit`. ``numba.njit(cache=True)`` raises
at decoration when none of numba's cache locations is writable (``NUMBA_CACHE_DIR``, ``__pycache__`` beside the
module, the user's cache directory: all of them in a read-only install with a read-only home), which would make the
decorated module fail to import and its code look absent. Here such a function is compiled in every process
instead, after one warning that says how to get the cache back. Imports numba; the modules that use it are imported
lazily by :mod:`gmamba_zoo.ops.selective_scan`.
"""
import warnings
from typing import Any, Callable

import numba

__all__ = ['cached_njit']

_warned = False


def cached_njit(**options: Any) -> Callable:
    """``numba.njit(cache=True, **options)``, or ``numba.njit(cache=False, **options)`` (one ``RuntimeWarning`` per
    process) where numba has no writable cache directory."""
    def decorate(func: Callable) -> Callable:
        global _warned
        try:
            return numba.njit(cache=True, **options)(func)
        except RuntimeError as e:  # numba: "cannot cache function ...: no locator available for file ..."
            if not _warned:
                _warned = True
                warnings.warn(f'gmamba_zoo: numba cannot cache the compiled CPU loops ({e}); they are compiled in '
                              'every process. Set NUMBA_CACHE_DIR to a writable directory to avoid that.',
                              RuntimeWarning, stacklevel=3)
            return numba.njit(cache=False, **options)(func)
    return decorate
