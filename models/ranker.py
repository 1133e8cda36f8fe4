"""A DRN-style dueling Q-network that ranks candidate items for a session.

Q(s, a) = V(s) + A(s, a), as in DRN (Zheng et al., WWW 2018).  The state s is the session's GRU4Rec
hidden state and context (hour of day, session length, time since the last click, activeness);
the action a is a candidate item: its embedding, popularity (recent clicks, rolling CTR), freshness,
its similarity to the state, and the slot position (0 while ranking).  The advantage stream sees
the state-item interaction (hidden ⊙ embedding) with the scalars.  A linear skip over the scalars
starts the ranker out as GRU4Rec's own order nudged by what is popular now (:data:`SCALAR_PRIOR`),
so an untrained ranker is already sensible, and dueling bandit gradient descent moves it from there.
The skip's weights are not zero on purpose: DBGD's perturbation is multiplicative (α·U(-1,1)⊙W), so
a weight at zero is never explored, and a ranker whose order depends on one weight alone (as it did
with a skip on the similarity only) ranks exactly as its explorer does — interleaving then compares a
ranking with itself and DBGD learns nothing (``python -m bench.online_study`` showed it).

Weights travel as one flat float32 vector (``get_weights``/``set_weights``): that is what DBGD
perturbs and what the registry stores.

Examples
--------
>>> import torch
>>> q = DuelingQNetwork(hidden_size=8, seed=0)
>>> state = torch.zeros(2, 8); ctx = torch.zeros(2, N_CONTEXT)
>>> emb = torch.randn(2, 5, 8); scal = torch.zeros(2, 5, N_ACTION_SCALARS)
>>> tuple(q(state, ctx, emb, scal).shape)
(2, 5)
>>> w = q.get_weights(); q.set_weights(w * 2); bool((q.get_weights() == w * 2).all())
True
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

#: context features: sin hour, cos hour, log1p(session length), log1p(seconds since last click), activeness
N_CONTEXT = 5
#: per-candidate scalars: log1p(recent clicks), rolling CTR, freshness, similarity, slot position
N_ACTION_SCALARS = 5
SIMILARITY = 3
#: the linear skip's starting weights: recent clicks, CTR, freshness, similarity, position
SCALAR_PRIOR = (0.25, 2.0, 0.25, 1.0, 0.0)


class DuelingQNetwork(nn.Module):
    def __init__(self, hidden_size: int, width: int = 32, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.hidden_size = hidden_size
        self.value = nn.Sequential(nn.Linear(hidden_size + N_CONTEXT, width), nn.ReLU(), nn.Linear(width, 1))
        self.advantage = nn.Sequential(nn.Linear(hidden_size + N_CONTEXT + N_ACTION_SCALARS, width), nn.ReLU(),
                                       nn.Linear(width, 1))
        self.scalar_weights = nn.Parameter(torch.tensor(SCALAR_PRIOR))
        with torch.no_grad():
            for layer in (*self.value, *self.advantage):
                if isinstance(layer, nn.Linear):
                    bound = 1.0 / math.sqrt(layer.in_features)
                    layer.weight.uniform_(-bound, bound, generator=gen)
                    layer.bias.uniform_(-bound, bound, generator=gen)
            # the learned advantage starts small next to the similarity skip (but not zero:
            # DBGD's multiplicative perturbation never moves a weight that is exactly zero)
            self.advantage[-1].weight.mul_(0.05)
            self.advantage[-1].bias.zero_()

    def forward(self, state: torch.Tensor, context: torch.Tensor, item_emb: torch.Tensor,
                action_scalars: torch.Tensor) -> torch.Tensor:
        """Q for each of C candidates of each of B sessions: state (B,H), context (B,5), emb (B,C,H), scalars (B,C,5).

        The advantage stream sees the state-item interaction (hidden ⊙ embedding), the context and the
        candidate's scalars.  (The stream scores W and W~ together with :class:`RankerStack`.)
        """
        inter = state.unsqueeze(1) * item_emb                                     # (B, C, H)
        ctx = context.unsqueeze(1).expand(-1, item_emb.shape[1], -1)
        value = self.value(torch.cat([state, context], dim=1))
        advantage = self.advantage(torch.cat([inter, ctx, action_scalars], dim=2)).squeeze(2)
        return value + advantage + action_scalars @ self.scalar_weights

    def get_weights(self) -> np.ndarray:
        return nn.utils.parameters_to_vector(self.parameters()).detach().cpu().numpy().astype(np.float32)

    def set_weights(self, weights: np.ndarray) -> None:
        vec = torch.as_tensor(np.asarray(weights, dtype=np.float32))
        if vec.numel() != sum(p.numel() for p in self.parameters()):
            raise ValueError(f"weight vector of {vec.numel()} values does not fit this network")
        nn.utils.vector_to_parameters(vec, self.parameters())


class RankerStack:
    """Several dueling Q-networks of the same shape (W and its explorer W~) evaluated in one pass.

    The stream scores every candidate with both W and W~.  Run one after the other, the two modules
    cost two of everything: the concatenated inputs, the module calls, eight small matrix products.
    Here the first layers of all networks are one matrix (their outputs side by side) and the second
    layers one block-diagonal matrix, so a batch is five matrix products whatever the number of
    networks.  The advantage stream's first layer is applied in parts, never building its concatenated
    input: the state-item interaction (B·C rows), the context (once per session, B rows) and the
    candidate scalars.  :meth:`q` equals ``torch.stack([net(...) for net in nets], -1)`` to float32
    rounding (``tests/unit/test_ranker.py``).  Weights are copied at construction: build a new stack
    when the networks change (the registry's versions are immutable, so a loaded version never does).
    """

    def __init__(self, nets: list[DuelingQNetwork]) -> None:
        h = nets[0].hidden_size
        with torch.no_grad():
            v1 = [n.value[0] for n in nets]
            a1 = [n.advantage[0] for n in nets]
            self.v1_w = torch.cat([layer.weight.T for layer in v1], 1).contiguous()   # (H+5, width·k)
            self.v1_b = torch.cat([layer.bias for layer in v1])
            a1_w = torch.cat([layer.weight.T for layer in a1], 1)                      # (H+10, width·k)
            self.a1_inter = a1_w[:h].contiguous()
            self.a1_ctx = a1_w[h: h + N_CONTEXT].contiguous()
            self.a1_scalars = a1_w[h + N_CONTEXT:].contiguous()
            self.a1_b = torch.cat([layer.bias for layer in a1])
            self.v2_w, self.v2_b = self._block([n.value[2] for n in nets])
            self.a2_w, self.a2_b = self._block([n.advantage[2] for n in nets])
            self.skip = torch.stack([n.scalar_weights for n in nets], 1).detach().clone()  # (5, k)

    @staticmethod
    def _block(layers: list[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor]:
        """Second layers (width -> 1 each) as one block-diagonal (width·k, k) matrix and their biases."""
        width = layers[0].in_features
        w = torch.zeros(width * len(layers), len(layers))
        for j, layer in enumerate(layers):
            w[j * width: (j + 1) * width, j] = layer.weight[0]
        return w, torch.cat([layer.bias for layer in layers])

    def q(self, state: torch.Tensor, context: torch.Tensor, item_emb: torch.Tensor,
          action_scalars: torch.Tensor) -> torch.Tensor:
        """Q (B, C, k) of every network for C candidates of B sessions (the inputs of
        :meth:`DuelingQNetwork.forward`)."""
        b, c, h = item_emb.shape
        with torch.no_grad():
            value = torch.relu(torch.addmm(self.v1_b, torch.cat([state, context], 1), self.v1_w)) @ self.v2_w
            inter = (state.unsqueeze(1) * item_emb).reshape(b * c, h)
            pre = (inter @ self.a1_inter).reshape(b, c, -1)
            pre += torch.addmm(self.a1_b, context, self.a1_ctx).unsqueeze(1)
            pre += action_scalars @ self.a1_scalars
            advantage = torch.relu_(pre) @ self.a2_w
            return advantage.add_(action_scalars @ self.skip).add_((value + self.v2_b + self.a2_b).unsqueeze(1))

