"""Compiled CPU loops for the PyTorch scan's first-order recurrences (needs the optional ``numba`` package).

The chunked scan in :mod:`gmamba_zoo.ops.selective_scan` spends most of its CPU time at small step sizes in
dispatching one ``addcmul_`` per time step from Python. These two loops do the same arithmetic, in the same
order, in one call per chunk. They work in place on float32 arrays of shape [T, S] (time, then all other
dimensions flattened) that share memory with the scan's workspace tensors. They are serial on purpose: the
recurrence is memory-bound, and a second thread pool beside PyTorch's would only compete with it.

This module imports numba at import time; :mod:`gmamba_zoo.ops.selective_scan` imports it lazily, on the first
CPU scan, so that ``import gmamba_zoo`` stays light. The loops are cached on disk where numba can write a cache, and
compiled in every process elsewhere (:func:`gmamba_zoo.ops._numba_jit.cached_njit`).
"""
from ._numba_jit import cached_njit

__all__ = ['recurrence_forward_', 'recurrence_reverse_']


@cached_njit(nogil=True)
def recurrence_forward_(h, a, h0):  # pragma: no cover - compiled; tested through the scan
    """h[t] += a[t] * h[t-1] for t = 0 .. T-1, with h[-1] = h0. h, a: [T, S]; h0: [S]."""
    steps, size = h.shape
    for s in range(size):
        h[0, s] += a[0, s] * h0[s]
    for t in range(1, steps):
        for s in range(size):
            h[t, s] += a[t, s] * h[t - 1, s]


@cached_njit(nogil=True)
def recurrence_reverse_(g, a):  # pragma: no cover - compiled; tested through the scan
    """g[t] += a[t+1] * g[t+1] for t = T-2 .. 0 (the adjoint recurrence). g, a: [T, S]."""
    steps, size = g.shape
    for t in range(steps - 2, -1, -1):
        for s in range(size):
            g[t, s] += a[t + 1, s] * g[t + 1, s]



@cached_njit(nogil=True)
def fill_chunk_(log_dec, hs, dt, u, a_t, b):  # pragma: no cover - compiled; tested through the scan
    """log_dec[t, i, n, d] = dt[t, i, d] * a_t[n, d] and hs[t, i, n, d] = (dt[t, i, d] * u[t, i, d]) * b[t, i, n].

    The two broadcast products that start a chunk of the scan, in one pass (PyTorch's broadcasting ``mul`` is
    several times slower per element on these shapes). log_dec, hs: [T, B, N, D]; dt, u: [T, B, D]; a_t: [N, D];
    b: [T, B, N].
    """
    steps, bsz, n_state, dim = hs.shape
    for t in range(steps):
        for i in range(bsz):
            for n in range(n_state):
                bn = b[t, i, n]
                for d in range(dim):
                    log_dec[t, i, n, d] = dt[t, i, d] * a_t[n, d]
                    hs[t, i, n, d] = (dt[t, i, d] * u[t, i, d]) * bn
