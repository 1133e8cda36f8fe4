"""Next-click evaluation, as in the GRU4Rec reference protocol.

For every test session and every position, the next item is ranked against *all* training items
from the hidden state after the clicks so far (reset per session).  Recall@K is the share of
events whose target ranks within K; MRR@K averages 1/rank over them (0 beyond K).

Ties are explicit, because a model that scores many items equally must not profit from it:
``conservative`` (default) puts the target below every tied item, ``standard`` above them,
``median`` in their middle.

Examples
--------
>>> import torch
>>> scores = torch.tensor([[0.5, 0.9, 0.5, 0.1]])      # target is item 2, tied with item 0
>>> rank_of_targets(scores, torch.tensor([2]), "conservative").tolist()
[3.0]
>>> rank_of_targets(scores, torch.tensor([2]), "standard").tolist()
[2.0]
>>> rank_of_targets(scores, torch.tensor([2]), "median").tolist()
[2.5]
"""

from __future__ import annotations

import itertools
import logging
from typing import Literal

import numpy as np
import pandas as pd
import torch

from models.data import restrict_to_items
from models.gru4rec import GRU4Rec
from models.session_batches import SessionParallelBatches, session_offsets

log = logging.getLogger(__name__)

TieMode = Literal["conservative", "standard", "median"]


class NaNModelError(ValueError):
    """Raised when asked to evaluate a model whose training loss went NaN."""


def rank_of_targets(scores: torch.Tensor, targets: torch.Tensor, mode: TieMode = "conservative") -> torch.Tensor:
    """1-based rank of each row's target among the row's scores, with the given tie rule."""
    target_scores = scores.gather(1, targets.reshape(-1, 1))
    higher = (scores > target_scores).sum(dim=1).float()
    if mode == "standard":
        return higher + 1
    tied = (scores == target_scores).sum(dim=1).float()  # includes the target itself
    if mode == "conservative":
        return higher + tied
    if mode == "median":
        return higher + 0.5 * (tied - 1) + 1
    raise ValueError(f"unknown tie mode {mode!r}")


def metrics_from_ranks(ranks: np.ndarray, cutoffs=(5, 10, 20)) -> dict[str, float]:
    """Recall@K and MRR@K from an array of 1-based ranks."""
    out: dict[str, float] = {}
    n = max(len(ranks), 1)
    for k in cutoffs:
        hit = ranks <= k
        out[f"recall@{k}"] = float(hit.sum() / n)
        out[f"mrr@{k}"] = float((hit / ranks).sum() / n)
    return out


@torch.no_grad()
def evaluate(gru: GRU4Rec, test: pd.DataFrame, cutoffs=(5, 10, 20), mode: TieMode = "conservative",
             batch_size: int = 512, target_column: str | None = None) -> dict[str, float]:
    """Recall@K and MRR@K of next-click prediction on ``test`` (clicks on unseen items dropped first).

    With ``target_column``, every click still feeds the session's state but only events whose target
    row has a true value there are scored (a retrain scores organic clicks only, see models.retrain).
    """
    if gru.model is None:
        raise ValueError("the model is not trained")
    if gru.trained_with_nan:
        raise NaNModelError("training produced a NaN loss; refusing to evaluate this model")
    test = restrict_to_items(test.sort_values(["SessionId", "Time"], kind="mergesort"), gru.item_ids)
    items = gru.item_ids.get_indexer(test["ItemId"].astype(str))
    offsets = session_offsets(test["SessionId"].to_numpy())
    gru.model.eval()
    hidden = gru.init_hidden(min(batch_size, len(offsets) - 1))
    ranks = []
    steps = SessionParallelBatches(items, offsets, batch_size, device=gru.device)
    # the same walk over a 0/1 column: its "targets" say which events count
    flags = (SessionParallelBatches(test[target_column].to_numpy().astype(np.int64), offsets, batch_size)
             if target_column is not None else None)
    for step, flag in zip(steps, flags if flags is not None else itertools.repeat(None)):
        if step.reset is not None:
            hidden[:, step.reset] = 0.0
            if step.keep is not None:
                hidden = hidden[:, step.keep]
        hidden, scores = gru.step(hidden, step.inputs)
        r = rank_of_targets(scores, step.targets, mode).cpu()
        ranks.append(r if flag is None else r[flag.targets.cpu() > 0])
    all_ranks = torch.cat(ranks).numpy() if ranks else np.array([])
    result = metrics_from_ranks(all_ranks, cutoffs)
    result["events"] = float(len(all_ranks))
    return result
