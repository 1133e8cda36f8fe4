"""Negative samples by popularity^alpha, drawn in large pre-sampled buffers (as GRU4Rec does).

Drawing millions of samples in one ``searchsorted`` call and handing them out row by row is far
cheaper than sampling at every mini-batch step.

Examples
--------
>>> import numpy as np, torch
>>> _ = torch.manual_seed(0)
>>> cache = SampleCache(np.array([1.0, 0.0, 3.0]), n_sample=4, alpha=1.0, max_size=40)
>>> sample = cache.get_sample()
>>> sample.shape, bool((sample != 1).all())
(torch.Size([4]), True)
"""

from __future__ import annotations

import numpy as np
import torch


class SampleCache:
    """Hands out ``n_sample`` item indices per call, drawn with probability proportional to pop^alpha.

    Parameters
    ----------
    popularity
        Click count of every item (index = item index).
    n_sample
        Samples per mini-batch step.
    alpha
        0 samples uniformly, 1 proportionally to popularity.
    max_size
        Samples drawn per refill (``max_size // n_sample`` steps' worth).
    """

    def __init__(self, popularity: np.ndarray, n_sample: int, alpha: float, max_size: int = 10_000_000,
                 device: str | torch.device = "cpu") -> None:
        weights = np.asarray(popularity, dtype=np.float64) ** alpha
        if alpha == 0:
            weights = np.ones_like(weights)
        cdf = np.cumsum(weights)
        cdf /= cdf[-1]
        self.cdf = torch.as_tensor(cdf, dtype=torch.float64, device=device)
        self.n_sample = n_sample
        self.steps_per_refill = max(1, max_size // max(n_sample, 1))
        self.device = device
        self._buffer = torch.empty(0, n_sample, dtype=torch.long, device=device)
        self._pointer = 0

    def _refill(self) -> None:
        u = torch.rand(self.steps_per_refill * self.n_sample, dtype=torch.float64, device=self.device)
        idx = torch.searchsorted(self.cdf, u, right=True).clamp_(max=len(self.cdf) - 1)
        self._buffer = idx.reshape(self.steps_per_refill, self.n_sample)
        self._pointer = 0

    def get_sample(self) -> torch.Tensor:
        if self._pointer >= len(self._buffer):
            self._refill()
        sample = self._buffer[self._pointer]
        self._pointer += 1
        return sample
