"""Session-parallel mini-batches, as in GRU4Rec (Hidasi et al., ICLR 2016, section 3.1.1).

Each of ``batch_size`` rows follows one session; at every step a row feeds its session's current
item and predicts the next one.  When a row's session ends, the next unused session takes the row
and that row's hidden state must be reset; once sessions run out, rows are dropped and the batch
shrinks.  The Python loop runs once per *step* (``batch_size`` events), never per event.

Examples
--------
>>> import numpy as np
>>> items = np.array([10, 11, 12, 20, 21, 30, 31, 32, 33])
>>> offsets = np.array([0, 3, 5, 9])          # sessions [10 11 12] [20 21] [30 31 32 33]
>>> for step in SessionParallelBatches(items, offsets, batch_size=2):
...     print(step.inputs.tolist(), step.targets.tolist(),
...           None if step.reset is None else step.reset.tolist(),
...           None if step.keep is None else step.keep.tolist())
[10, 20] [11, 21] None None
[11, 30] [12, 31] [False, True] None
[31] [32] [True, False] [False, True]
[32] [33] None None
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Step:
    """One step.  Before it, zero the hidden rows where ``reset`` is set, then keep the rows in ``keep``."""

    inputs: torch.Tensor
    targets: torch.Tensor
    reset: torch.Tensor | None
    keep: torch.Tensor | None


class SessionParallelBatches:
    """Iterate over clicks (``items``, grouped by session with ``offsets``) in session-parallel steps.

    Parameters
    ----------
    items
        Item index of every click, sessions contiguous and in time order.
    offsets
        ``offsets[s]`` is the first click of session ``s``; ``offsets[-1] == len(items)``.
    batch_size
        Number of sessions processed in parallel.
    order
        Order in which sessions are taken (default: as stored).
    device
        Where the yielded tensors live.
    """

    def __init__(self, items: np.ndarray, offsets: np.ndarray, batch_size: int,
                 order: np.ndarray | None = None, device: str | torch.device = "cpu") -> None:
        self.items = torch.as_tensor(np.asarray(items, dtype=np.int64), device=device)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.batch_size = batch_size
        n_sessions = len(self.offsets) - 1
        self.order = np.arange(n_sessions) if order is None else np.asarray(order, dtype=np.int64)
        self.device = device

    def __len__(self) -> int:
        """Number of training events (clicks that have a next click)."""
        return int(len(self.items) - (len(self.offsets) - 1))

    def __iter__(self) -> Iterator[Step]:
        n_sessions = len(self.order)
        rows = np.arange(min(self.batch_size, n_sessions))
        next_session = len(rows)
        sessions = self.order[rows]
        start = self.offsets[sessions].copy()
        end = self.offsets[sessions + 1].copy()
        reset: torch.Tensor | None = None
        keep: torch.Tensor | None = None
        while len(start):
            steps = int((end - start).min()) - 1
            for i in range(steps):
                cur = torch.as_tensor(start + i, device=self.device)
                yield Step(self.items[cur], self.items[cur + 1], reset, keep)
                reset = keep = None
            start += max(steps, 0)
            finished = end - start <= 1
            n_finished = int(finished.sum())
            if n_finished == 0:
                continue
            replacement = np.arange(next_session, next_session + n_finished)
            next_session += n_finished
            has_new = replacement < n_sessions
            finished_rows = np.flatnonzero(finished)
            refill = finished_rows[has_new]
            new_sessions = self.order[replacement[has_new]]
            start[refill] = self.offsets[new_sessions]
            end[refill] = self.offsets[new_sessions + 1]
            valid = np.ones(len(start), dtype=bool)
            valid[finished_rows[~has_new]] = False
            reset = torch.as_tensor(finished, device=self.device)
            if not valid.all():
                keep = torch.as_tensor(valid, device=self.device)
                start, end = start[valid], end[valid]


def session_offsets(session_ids: np.ndarray) -> np.ndarray:
    """Offsets of contiguous session runs: ``[0, start of 2nd session, ..., len]``."""
    session_ids = np.asarray(session_ids)
    change = np.flatnonzero(session_ids[1:] != session_ids[:-1]) + 1
    return np.concatenate([[0], change, [len(session_ids)]]).astype(np.int64)
