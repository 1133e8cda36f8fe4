"""GRU4Rec in torch, faithful to the original (Hidasi et al. 2016; Hidasi & Karatzoglou 2018).

What makes GRU4Rec work, and is kept here:

* session-parallel mini-batches with the hidden state reset where a session ends
  (:mod:`models.session_batches`), truncated back-propagation of one step;
* output scores against *sampled* items only: the mini-batch's other targets plus ``n_sample``
  extra items drawn by popularity^``sample_alpha`` from large pre-sampled buffers
  (:mod:`models.sampling`);
* the losses of the 2018 paper: cross-entropy over the sampled softmax with logQ correction, and
  BPR-max with score regularisation ``bpreg`` (ELU final activation with ``elu_param``); TOP1-max;
* the constrained (shared input/output) embedding, a separate input embedding, or one-hot input;
* dropout on the input embedding and the hidden state;
* Adagrad with momentum over sparse (indexed) rows (:mod:`models.optim`).

Hyperparameters are named as the reference names them (``layers``, ``loss``, ``batch_size``,
``dropout_p_embed``, ``dropout_p_hidden``, ``learning_rate``, ``momentum``, ``n_sample``,
``sample_alpha``, ``bpreg``, ``elu_param``, ``logq``, ``constrained_embedding``, ``embedding``).

The streaming step API (:meth:`GRU4Rec.step`) is the same computation as the training forward
pass, run on a batch of sessions' hidden states.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import orjson
import pandas as pd
import torch
from torch import nn

from models.dropout import NumpyDropout
from models.onednn_matmul import onednn_float32_matmul
from models.optim import IndexedAdagradM
from models.sampling import SampleCache
from models.session_batches import SessionParallelBatches, session_offsets

log = logging.getLogger(__name__)

Loss = Literal["cross-entropy", "bpr-max", "top1-max"]


def init_parameter_matrix(tensor: torch.Tensor, dim0_scale: int = 1, dim1_scale: int = 1) -> None:
    """Uniform init with sigma = sqrt(6 / (fan0 + fan1)); gate-stacked matrices count one gate's fan."""
    sigma = math.sqrt(6.0 / float(tensor.size(0) / dim0_scale + tensor.size(1) / dim1_scale))
    nn.init.uniform_(tensor, -sigma, sigma)


class OneHotGRULayer(nn.Module):
    """First GRU layer fed one-hot items: the input weights are an (items x 3*hidden) sparse lookup.

    As in the reference, the reset gate scales the projected previous state, r * (h Wh), rather
    than projecting the scaled state, (r * h) Wh.
    """

    def __init__(self, n_items: int, hidden: int) -> None:
        super().__init__()
        self.Wx = nn.Embedding(n_items, hidden * 3, sparse=True)
        self.Wh = nn.Parameter(torch.empty(hidden, hidden * 3))
        self.Bh = nn.Parameter(torch.zeros(hidden * 3))

    def reset_parameters(self) -> None:
        init_parameter_matrix(self.Wx.weight, dim1_scale=3)
        init_parameter_matrix(self.Wh, dim1_scale=3)
        self.Bh.data.zero_()

    def forward(self, items: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        vx_h, vx_r, vx_z = (self.Wx(items) + self.Bh).chunk(3, 1)
        vh_h, vh_r, vh_z = (h @ self.Wh).chunk(3, 1)
        r = torch.sigmoid(vx_r + vh_r)
        z = torch.sigmoid(vx_z + vh_z)
        candidate = torch.tanh(r * vh_h + vx_h)
        return (1.0 - z) * h + z * candidate


class GRU4RecModel(nn.Module):
    """The network: item input -> GRU layer(s) -> scores against output item embeddings ``Wy`` (+ bias ``By``)."""

    def __init__(self, n_items: int, layers: list[int], dropout_p_embed: float = 0.0, dropout_p_hidden: float = 0.0,
                 embedding: int = 0, constrained_embedding: bool = True) -> None:
        super().__init__()
        self.n_items, self.layers = n_items, list(layers)
        self.embedding, self.constrained_embedding = embedding, constrained_embedding
        self.onehot: OneHotGRULayer | None = None
        self.E: nn.Embedding | None = None
        first = 0
        if constrained_embedding:
            n_input = layers[-1]
        elif embedding:
            self.E = nn.Embedding(n_items, embedding, sparse=True)
            n_input = embedding
        else:
            self.onehot = OneHotGRULayer(n_items, layers[0])
            n_input, first = layers[0], 1
        self.first = first
        self.drop_embed = NumpyDropout(dropout_p_embed)
        self.cells = nn.ModuleList(
            nn.GRUCell(n_input if i == 0 else layers[i - 1], layers[i]) for i in range(first, len(layers))
        )
        self.drop_hidden = nn.ModuleList(NumpyDropout(dropout_p_hidden) for _ in range(len(layers)))
        self.Wy = nn.Embedding(n_items, layers[-1], sparse=True)
        self.By = nn.Embedding(n_items, 1, sparse=True)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.E is not None:
            init_parameter_matrix(self.E.weight)
        if self.onehot is not None:
            self.onehot.reset_parameters()
        for cell in self.cells:
            init_parameter_matrix(cell.weight_ih, dim0_scale=3)
            init_parameter_matrix(cell.weight_hh, dim0_scale=3)
            cell.bias_ih.zero_()
            cell.bias_hh.zero_()
        init_parameter_matrix(self.Wy.weight)
        self.By.weight.zero_()

    def seed_dropout(self, seed: int) -> None:
        """Seed every dropout's mask stream (its own stream each, drawn from ``seed``)."""
        for i, drop in enumerate([self.drop_embed, *self.drop_hidden]):
            drop.seed(np.random.SeedSequence([seed, i]))

    def init_hidden(self, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Zero state for ``batch`` new sessions: shape (layers, batch, hidden); layers must share a size."""
        return torch.zeros(len(self.layers), batch, self.layers[-1], device=device or self.Wy.weight.device)

    def hidden_step(self, items: torch.Tensor, hidden: list[torch.Tensor], training: bool,
                    inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Advance every layer one step; ``hidden`` (a list, one tensor per layer) is updated in place.

        Dropout (training only) follows the item input and every layer's output, and the dropped
        output is what the next step sees, as in the reference.
        """
        if self.onehot is not None:
            x = self.onehot(items, hidden[0])
        elif inputs is not None:  # precomputed item inputs (the stream's cold-start path)
            x = inputs
        else:
            x = self.Wy(items) if self.constrained_embedding else self.E(items)
        if training:
            x = self.drop_embed(x)
        if self.onehot is not None:
            hidden[0] = x
        for i, cell in enumerate(self.cells, start=self.first):
            x = cell(x, hidden[i])
            if training:
                x = self.drop_hidden[i](x)
            hidden[i] = x
        return x

    def score(self, h: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of ``targets`` (or of every item) for final hidden states ``h``: h @ Wy^T + By."""
        if targets is None:
            return torch.addmm(self.By.weight.T, h, self.Wy.weight.T)
        return h @ self.Wy(targets).T + self.By(targets).T

    def training_scores(self, items: torch.Tensor, hidden: list[torch.Tensor],
                        targets: torch.Tensor) -> tuple[torch.Tensor, ItemRows]:
        """A training step's forward pass, :meth:`hidden_step` then :meth:`score` of ``targets``, on the rows it touches.

        The step reads each item row of ``Wy`` / ``By`` it needs once: the distinct items of the inputs
        (with the constrained embedding) and of the targets, gathered into small leaf tensors.  Their
        gradients come out dense and already summed per row, so the optimiser gets a coalesced sparse
        gradient; through ``nn.Embedding`` the same step made two sparse gradients (input and output
        lookups, one row per lookup) that had to be concatenated and coalesced.  The scores are products
        with the distinct rows, whose columns are then picked per target, so an item sampled twice keeps
        its two columns, as in the reference.  The arithmetic is the same; the sums run in another order
        (unit test: scores, loss and updated weights within float tolerance).
        """
        keys = torch.cat([items, targets]) if self.constrained_embedding else targets
        rows, inverse = torch.unique(keys, return_inverse=True)
        gathered = _padded(rows, ROW_BLOCK)
        rows_w = self.Wy.weight.detach().index_select(0, gathered).requires_grad_()
        rows_b = self.By.weight.detach().index_select(0, gathered).requires_grad_()
        inputs = input_rows = None
        if self.constrained_embedding:  # the inputs' rows are a leaf of their own (see attach_row_grads)
            input_rows, inverse = inverse[: len(items)], inverse[len(items):]
            inputs = self.Wy.weight.detach().index_select(0, items).requires_grad_()
        out = self.hidden_step(items, hidden, training=True, inputs=inputs)
        scores = torch.addmm(rows_b.T, out, rows_w.T).index_select(1, inverse)
        is_target = torch.zeros(len(rows), dtype=torch.bool, device=rows.device)
        is_target[inverse] = True
        return scores, ItemRows(rows, rows_w, rows_b, is_target, inputs, input_rows)

    def attach_row_grads(self, touched: ItemRows) -> None:
        """After ``backward``: hand the gathered rows' gradients to ``Wy`` / ``By`` as coalesced sparse gradients.

        ``By`` gets the rows of the targets only, as its lookup of the targets gave it: a row that is only an
        input has a zero bias gradient, and an update with it would still move the row by its momentum.
        With the constrained embedding the inputs' gradients (batch rows) are added into their rows' here:
        through a gather from the gathered rows, autograd made a zeroed full-size buffer for them and added it
        to the scores' gradient, two passes over all rows for a batch's worth of them.
        """
        target_rows = touched.is_target.nonzero().squeeze(1)
        n = len(touched.rows)  # the gathered rows past n are padding (see _padded): no score reads them
        weight_grad = touched.weight.grad
        if touched.inputs is not None:
            weight_grad.index_add_(0, touched.input_rows, touched.inputs.grad)
        for table, rows, grad in ((self.Wy.weight, touched.rows, weight_grad[:n]),
                                  (self.By.weight, touched.rows[target_rows], touched.bias.grad[target_rows])):
            table.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), grad, table.shape, is_coalesced=True,
                                                 check_invariants=False)


#: a step gathers its item rows in blocks of this many (see :func:`_padded`)
ROW_BLOCK = 64


def _padded(rows: torch.Tensor, block: int) -> torch.Tensor:
    """``rows`` followed by copies of its first row up to a multiple of ``block``.

    Why: the scores are a product with the gathered rows, and oneDNN builds (JIT-compiles) a kernel for each
    new product shape, ~0.6 ms (models/onednn_matmul.py).  The number of distinct rows changes at every step;
    in blocks of 64 a Diginetica epoch sees a handful of shapes instead of hundreds, for at most 63 extra
    columns (~3%) that no target selects, so their scores get no gradient and the padded rows stay out of
    the update.
    """
    extra = -len(rows) % block
    return rows if extra == 0 else torch.cat([rows, rows[:1].expand(extra)])


@dataclass
class ItemRows:
    """The item rows one training step touches: sorted distinct indices and leaf copies of their ``Wy`` / ``By`` rows."""

    rows: torch.Tensor
    weight: torch.Tensor  # one row per index of ``rows``, then the padding rows of :func:`_padded`
    bias: torch.Tensor  # the same rows of ``By``
    is_target: torch.Tensor  # per row: whether a target's (so a score's) row, not only an input's
    inputs: torch.Tensor | None = None  # constrained embedding: leaf copies of the inputs' rows, one per input
    input_rows: torch.Tensor | None = None  # and each input's position among ``rows``


@dataclass
class GRU4RecParams:
    """Hyperparameters, named as in the reference implementation."""

    layers: list[int] = field(default_factory=lambda: [100])
    loss: Loss = "cross-entropy"
    batch_size: int = 32
    dropout_p_embed: float = 0.0
    dropout_p_hidden: float = 0.0
    learning_rate: float = 0.1
    momentum: float = 0.0
    n_sample: int = 2048
    sample_alpha: float = 0.75
    sample_cache_max_size: int = 10_000_000
    bpreg: float = 1.0
    elu_param: float = 0.5
    logq: float = 0.0
    constrained_embedding: bool = True
    embedding: int = 0
    n_epochs: int = 10
    seed: int = 42


class GRU4Rec:
    """Training, streaming inference, export and persistence around :class:`GRU4RecModel`.

    Examples
    --------
    >>> import pandas as pd
    >>> clicks = pd.DataFrame({"SessionId": [1, 1, 1, 2, 2, 3, 3, 3],
    ...                        "ItemId": ["a", "b", "c", "a", "b", "b", "c", "a"],
    ...                        "Time": [0, 1, 2, 0, 1, 0, 1, 2]})
    >>> gru = GRU4Rec(GRU4RecParams(layers=[8], batch_size=2, n_sample=4, n_epochs=2, seed=1))
    >>> gru.fit(clicks).n_items
    3
    >>> h = gru.init_hidden(1)
    >>> h, scores = gru.step(h, gru.item_indices(["a"]))
    >>> tuple(scores.shape)
    (1, 3)
    """

    def __init__(self, params: GRU4RecParams | None = None, device: str | None = None,
                 onednn_matmul: bool = True) -> None:
        self.params = params or GRU4RecParams()
        # training's float32 products on oneDNN's kernel where it stays float32 (models.onednn_matmul)
        self.onednn_matmul = onednn_matmul
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model: GRU4RecModel | None = None
        self.item_ids: pd.Index = pd.Index([], dtype=str)
        self.loss_history: list[float] = []
        # Adagrad's accumulated squared gradients per parameter, kept with the model so that a warm start
        # continues with the step sizes training ended with (fresh accumulators make the first steps large)
        self.accumulators: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ items

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def item_indices(self, item_ids) -> torch.Tensor:
        """Map string item ids to model indices (-1 for unknown items)."""
        idx = self.item_ids.get_indexer(pd.Index(item_ids, dtype=str))
        return torch.as_tensor(idx, dtype=torch.long, device=self.device)

    @property
    def trained_with_nan(self) -> bool:
        return any(not math.isfinite(x) for x in self.loss_history)

    # ------------------------------------------------------------------ training

    def _loss_fn(self) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
        p = self.params
        if p.loss == "cross-entropy":
            return self._xe_loss
        if p.loss == "bpr-max":
            return self._bpr_max_loss
        if p.loss == "top1-max":
            return self._top1_max_loss
        raise ValueError(f"unknown loss {p.loss!r}")

    def _xe_loss(self, scores: torch.Tensor, targets: torch.Tensor, n_valid: int) -> torch.Tensor:
        if self.params.logq > 0:
            # logQ correction: subtract the log of each column's sampling probability, which is the
            # popularity for the in-batch targets and popularity^sample_alpha for the extra samples.
            log_q = self._log_pop[targets]
            log_q[n_valid:] *= self.params.sample_alpha
            scores = scores - self.params.logq * log_q
        logits = scores - scores.max(dim=1, keepdim=True).values
        log_softmax = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        return -log_softmax.diagonal().sum()

    @staticmethod
    def _softmax_neg(scores: torch.Tensor) -> torch.Tensor:
        """Softmax over each row's negatives (the diagonal, the row's own target, gets weight 0).

        The reference zeroes the diagonal, subtracts the row maximum and masks the exponent; a -inf on the
        diagonal gives the same weights (a softmax does not depend on what is subtracted) in one fused
        operator, forward and backward, instead of nine (unit test: equal within 1e-6, gradients too).
        """
        rows = torch.arange(scores.shape[0], device=scores.device)
        return torch.softmax(scores.index_put((rows, rows), scores.new_tensor(float("-inf"))), dim=1)

    def _bpr_max_loss(self, scores: torch.Tensor, targets: torch.Tensor, n_valid: int) -> torch.Tensor:
        if self.params.elu_param > 0:
            scores = nn.functional.elu(scores, self.params.elu_param)
        weights = self._softmax_neg(scores)
        target = scores.diagonal().reshape(-1, 1)
        ranking = -torch.log(torch.sum(torch.sigmoid(target - scores) * weights, dim=1) + 1e-24)
        return torch.sum(ranking + self.params.bpreg * torch.sum(scores**2 * weights, dim=1))

    def _top1_max_loss(self, scores: torch.Tensor, targets: torch.Tensor, n_valid: int) -> torch.Tensor:
        weights = self._softmax_neg(scores)
        target = scores.diagonal().reshape(-1, 1)
        return torch.sum(torch.sum((torch.sigmoid(scores - target) + torch.sigmoid(scores**2)) * weights, dim=1))

    def fit(self, data: pd.DataFrame, progress: Callable[[int, dict], None] | None = None,
            warm_start: bool = False) -> "GRU4Rec":
        """Train on clicks (``SessionId``, ``ItemId``, ``Time``) for ``params.n_epochs`` epochs.

        ``progress(epoch, stats)`` is called after every epoch (the CLI draws its bar with it).
        With ``warm_start`` an already trained model keeps its weights; new items get new rows.
        """
        p = self.params
        torch.manual_seed(p.seed)
        np.random.seed(p.seed)
        data = data.sort_values(["SessionId", "Time"], kind="mergesort")
        items = pd.Index(data["ItemId"].astype(str).unique())
        if warm_start and self.model is not None:
            self._add_items(items.difference(self.item_ids, sort=False))
        else:
            self.item_ids = items
            self.model = GRU4RecModel(self.n_items, p.layers, p.dropout_p_embed, p.dropout_p_hidden,
                                      p.embedding, p.constrained_embedding).to(self.device)
        item_idx = self.item_ids.get_indexer(data["ItemId"].astype(str))
        offsets = session_offsets(data["SessionId"].to_numpy())
        # sessions start in time order, as the reference trains
        first_time = data["Time"].to_numpy()[offsets[:-1]]
        order = np.argsort(first_time, kind="mergesort")
        batches = SessionParallelBatches(item_idx, offsets, p.batch_size, order, self.device)
        pop = np.bincount(item_idx, minlength=self.n_items).astype(np.float64)
        self._log_pop = torch.log(torch.as_tensor(np.maximum(pop, 1.0), dtype=torch.float32, device=self.device))
        sampler = SampleCache(pop, p.n_sample, p.sample_alpha, p.sample_cache_max_size, self.device) \
            if p.n_sample > 0 else None
        optimizer = IndexedAdagradM(self.model.parameters(), lr=p.learning_rate, momentum=p.momentum)
        if warm_start:
            for name, param in self.model.named_parameters():
                acc = self.accumulators.get(name)
                if acc is not None:
                    grown = torch.zeros_like(param)  # rows of new items start fresh
                    grown[: acc.shape[0]] = acc.to(param.device)
                    optimizer.state[param]["acc"] = grown
                    if p.momentum > 0:
                        optimizer.state[param]["mom"] = torch.zeros_like(param)
        loss_fn = self._loss_fn()
        self.model.seed_dropout(p.seed)
        self.model.train()
        with onednn_float32_matmul(self.onednn_matmul and self.device.type == "cpu"):
            for epoch in range(p.n_epochs):
                t0 = time.perf_counter()
                total, n_events = self._epoch(batches, sampler, optimizer, loss_fn)
                seconds = time.perf_counter() - t0
                mean_loss = float(total) / max(n_events, 1)
                self.loss_history.append(mean_loss)
                stats = {"loss": mean_loss, "events": n_events, "seconds": seconds,
                         "events_per_s": n_events / seconds}
                log.info("epoch %d: loss %.4f, %d events in %.1fs (%.0f events/s)", epoch + 1, mean_loss,
                         n_events, seconds, n_events / seconds)
                if progress is not None:
                    progress(epoch, stats)
                if not math.isfinite(mean_loss):
                    log.error("training loss is %s at epoch %d: stopping; this model will not be evaluated",
                              mean_loss, epoch + 1)
                    break
        self.accumulators = {name: optimizer.state[param]["acc"].detach().clone()
                             for name, param in self.model.named_parameters() if "acc" in optimizer.state[param]}
        self.model.eval()
        return self

    def _epoch(self, batches: SessionParallelBatches, sampler: SampleCache | None, optimizer: IndexedAdagradM,
               loss_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]) -> tuple[torch.Tensor, int]:
        """One pass over the session-parallel batches; returns the summed loss and the number of events."""
        p = self.params
        total, n_events = torch.zeros((), device=self.device), 0
        hidden = [torch.zeros(p.batch_size, size, device=self.device) for size in p.layers]
        for step in batches:
            if step.reset is not None:
                for i, h in enumerate(hidden):
                    h = h.detach()
                    h[step.reset] = 0.0
                    hidden[i] = h[step.keep] if step.keep is not None else h
            else:
                hidden = [h.detach() for h in hidden]
            n_valid = len(step.inputs)
            targets = step.targets if sampler is None else torch.cat([step.targets, sampler.get_sample()])
            self.model.zero_grad(set_to_none=True)
            scores, touched = self.model.training_scores(step.inputs, hidden, targets)
            loss = loss_fn(scores, targets, n_valid) / p.batch_size
            loss.backward()
            self.model.attach_row_grads(touched)
            optimizer.step()
            total += loss.detach() * p.batch_size
            n_events += n_valid
        return total, n_events

    @torch.no_grad()
    def _add_items(self, new_items: pd.Index) -> None:
        """Grow the item tables for items first seen in a warm-start retrain (fresh rows, zero bias)."""
        if len(new_items) == 0:
            return
        model = self.model
        self.item_ids = self.item_ids.append(new_items)
        grown = GRU4RecModel(self.n_items, model.layers, model.drop_embed.p, model.drop_hidden[0].p,
                             model.embedding, model.constrained_embedding).to(self.device)
        state = model.state_dict()
        for name, tensor in grown.state_dict().items():
            old = state[name]
            if old.shape == tensor.shape:
                tensor.copy_(old)
            else:  # an item table: keep the old rows, the new ones stay freshly initialised
                tensor[: old.shape[0]].copy_(old)
        self.model = grown

    # ------------------------------------------------------------------ inference

    def init_hidden(self, batch: int) -> torch.Tensor:
        """Zero state for ``batch`` new sessions, shape (layers, batch, hidden)."""
        assert self.model is not None, "the model is not trained"
        return self.model.init_hidden(batch, self.device)

    @torch.no_grad()
    def step(self, hidden: torch.Tensor, items: torch.Tensor, score: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One click for each of a batch of sessions: (new hidden states, scores over all items).

        ``hidden`` is (layers, batch, hidden) and ``items`` (batch,) model indices.  This is the
        training forward pass in evaluation mode (no dropout).  With ``score=False`` only the new
        states are computed (scores are None): the stream scores once per click, after the last step.
        """
        assert self.model is not None, "the model is not trained"
        layers = list(hidden.unbind(0))
        unknown = items < 0
        if bool(unknown.any()):
            # cold start: an item the model has never seen still advances the session, with the
            # "unknown item" input (the mean item embedding); a one-hot model leaves the state as it is
            if self.model.onehot is not None:
                new_hidden, scores = self.step(hidden, items.clamp(min=0), score)
                new_hidden[:, unknown] = hidden[:, unknown]
                return new_hidden, scores
            table = self.model.Wy if self.model.constrained_embedding else self.model.E
            x = table(items.clamp(min=0))
            x[unknown] = table.weight.mean(dim=0)
            out = self.model.hidden_step(items, layers, training=False, inputs=x)
        else:
            out = self.model.hidden_step(items, layers, training=False)
        return torch.stack(layers), self.model.score(out) if score else None

    @torch.no_grad()
    def encode(self, sessions: list[torch.Tensor]) -> torch.Tensor:
        """Hidden states (layers, batch, hidden) after each session's items (model indices, -1 unknown), from zero.

        One batched :meth:`step` per position instead of one per item: the sessions are aligned at their
        last item, and a row's state stays zero until its first item comes (a session of 20 items costs 20
        batched steps, whatever the batch).  The same arithmetic as stepping each session alone, up to
        float rounding of batched products (within 1e-5 in the tests).
        """
        hidden = self.init_hidden(len(sessions))
        longest = max((len(s) for s in sessions), default=0)
        if longest == 0:
            return hidden
        lengths = torch.tensor([len(s) for s in sessions])
        items = torch.full((len(sessions), longest), -1, dtype=torch.long)
        for b, s in enumerate(sessions):
            if len(s):
                items[b, longest - len(s):] = s
        for t in range(longest):
            active = lengths >= longest - t  # rows whose items have begun by position t
            rows = active.nonzero().squeeze(1)
            if len(rows) == len(sessions):
                hidden, _ = self.step(hidden, items[:, t], score=False)
            else:
                stepped, _ = self.step(hidden[:, rows], items[rows, t], score=False)
                hidden[:, rows] = stepped
        return hidden

    @torch.no_grad()
    def forward_sequence(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run whole sessions (batch, T) from a zero state: hidden states (T, layers, batch, hidden), scores (T, batch, items)."""
        hidden = self.init_hidden(items.shape[0])
        states, scores = [], []
        for t in range(items.shape[1]):
            hidden, s = self.step(hidden, items[:, t])
            states.append(hidden)
            scores.append(s)
        return torch.stack(states), torch.stack(scores)

    def item_embeddings(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Export: output item embeddings (float32, items x hidden), item biases (float32), item ids."""
        assert self.model is not None, "the model is not trained"
        return (self.model.Wy.weight.detach().cpu().numpy().astype(np.float32),
                self.model.By.weight.detach().cpu().numpy().astype(np.float32).ravel(),
                self._id_list())

    def _id_list(self) -> list[str]:
        return list(map(str, self.item_ids.tolist()))  # one C-level pass, no per-item pandas indexing

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path | BinaryIO, accumulators: bool = True) -> None:
        """The model; with its optimiser's ``accumulators`` (as large as the item weights) unless told not to."""
        assert self.model is not None, "the model is not trained"
        torch.save({"params": asdict(self.params), "item_ids_json": _ids_tensor(self._id_list()),
                    "state_dict": self.model.state_dict(), "loss_history": self.loss_history,
                    "accumulators": self.accumulators if accumulators else {}}, path)

    @classmethod
    def load(cls, path: str | Path | BinaryIO, device: str | None = None) -> "GRU4Rec":
        blob = torch.load(path, map_location="cpu", weights_only=True)
        gru = cls(GRU4RecParams(**blob["params"]), device=device)
        gru.item_ids = pd.Index(_ids_from(blob), dtype=str)
        p = gru.params
        gru.model = GRU4RecModel(gru.n_items, p.layers, p.dropout_p_embed, p.dropout_p_hidden, p.embedding,
                                 p.constrained_embedding)
        gru.model.load_state_dict(blob["state_dict"])
        gru.model.to(gru.device).eval()
        gru.loss_history = list(blob["loss_history"])
        gru.accumulators = dict(blob.get("accumulators", {}))  # models saved before they were kept have none
        return gru


def _ids_tensor(ids: list[str]) -> torch.Tensor:
    """Item ids as one uint8 tensor holding their JSON list.

    torch's weights-only unpickler copies a tensor in one step, but reads a list of strings op by op in Python:
    for Diginetica's 43k ids that was most of a version switch's CPU, in the serving process beside its requests
    (``python -m bench.model_switch_stall``'s ``load_cpu_s``: 0.22-0.37 s with the list, 0.09-0.21 s without)."""
    return torch.frombuffer(bytearray(orjson.dumps(ids)), dtype=torch.uint8)


def _ids_from(blob: dict) -> list[str]:
    """The item ids of a saved model: :func:`_ids_tensor`'s, or the plain list models saved before it hold."""
    if "item_ids_json" in blob:
        return orjson.loads(blob["item_ids_json"].numpy().tobytes())
    return [str(i) for i in blob["item_ids"]]
