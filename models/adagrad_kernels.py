"""The Adagrad-with-momentum update as one compiled pass per tensor (numba), for CPU tensors.

Why: the update is a chain of element-wise operations (square, accumulate, square root, divide, scale,
momentum, add) over the rows a step touched.  In torch each is a pass of its own over the rows, and on a
Diginetica step (2,200 rows of 512 floats, scattered over a 43,000-row table) the chain took 6 ms of a
23 ms step on 2 cores; one loop that reads a row's gradient, accumulator, momentum and weight once and
writes them back takes a fraction of it (``python -m bench.gru4rec_profile``).

The arithmetic is the torch formulas', operation by operation in the tensors' own precision (constants are
cast to it, no fast-math), so the rows come out as :func:`models.optim._sparse_step` computes them
and :func:`models.optim._dense_step` do (unit test: accumulators and dense updates bit for bit in float32, a
few row updates one rounding apart).
The first call compiles (a few seconds; numba caches the machine code beside this file).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, cache=True)
def rows_update(weight: np.ndarray, acc: np.ndarray, mom: np.ndarray, rows: np.ndarray, grad: np.ndarray,
                neg_lr, momentum, eps, use_momentum: bool) -> None:  # pragma: no cover - compiled
    """Rows ``rows`` (distinct) of ``weight`` (n x d) take gradient ``grad`` (len(rows) x d), in place.

    acc += g^2;  step = (g / sqrt(acc + eps)) * -lr;  mom = mom * momentum + step (with momentum);
    weight += mom (or += step).  ``mom`` is ignored without momentum (pass any array of the right rank).
    """
    for k in numba.prange(rows.shape[0]):
        r = rows[k]
        for j in range(weight.shape[1]):
            g = grad[k, j]
            a = acc[r, j] + g * g
            acc[r, j] = a
            step = (g / np.sqrt(a + eps)) * neg_lr
            if use_momentum:
                step = mom[r, j] * momentum + step
                mom[r, j] = step
            weight[r, j] = weight[r, j] + step


@numba.njit(parallel=True, cache=True)
def dense_update(weight: np.ndarray, acc: np.ndarray, mom: np.ndarray, grad: np.ndarray,
                 neg_lr, momentum, eps, use_momentum: bool) -> None:  # pragma: no cover - compiled
    """The same update on every element of flat (1-D) ``weight``, ``acc``, ``mom``, ``grad``, in place."""
    for i in numba.prange(weight.shape[0]):
        g = grad[i]
        a = acc[i] + g * g
        acc[i] = a
        step = (neg_lr * g) / np.sqrt(a + eps)  # torch's addcdiv: value * t1 / t2
        if use_momentum:
            step = mom[i] * momentum + step
            mom[i] = step
        weight[i] = weight[i] + step
