"""Adagrad with momentum over indexed rows: GRU4Rec's optimiser.

Item tables (input/output embeddings, biases) get sparse gradients touching only the rows of a
mini-batch's items and samples; only those rows' accumulators, momenta and weights are updated.
Dense parameters (GRU weights) use the same rule over the whole tensor.

Update for a row with gradient g:  acc += g^2;  step = lr * g / sqrt(acc + eps);
with momentum:  mom = momentum * mom - step;  w += mom;  without:  w -= step.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class IndexedAdagradM(Optimizer):
    def __init__(self, params, lr: float = 0.05, momentum: float = 0.0, eps: float = 1e-6) -> None:
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        super().__init__(params, dict(lr=lr, momentum=momentum, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, momentum, eps = group["lr"], group["momentum"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["acc"] = torch.zeros_like(p)
                    if momentum > 0:
                        state["mom"] = torch.zeros_like(p)
                grad = p.grad
                if grad.is_sparse:
                    grad = grad.coalesce()
                    rows, values = grad.indices()[0], grad.values()
                    acc = state["acc"][rows] + values.pow(2)
                    state["acc"].index_copy_(0, rows, acc)
                    update = values / acc.add_(eps).sqrt_() * -lr
                    if momentum > 0:
                        mom = state["mom"][rows].mul_(momentum).add_(update)
                        state["mom"].index_copy_(0, rows, mom)
                        update = mom
                    p.index_add_(0, rows, update)
                else:
                    state["acc"].add_(grad.pow(2))
                    denom = state["acc"].add(eps).sqrt_()
                    if momentum > 0:
                        state["mom"].mul_(momentum).addcdiv_(grad, denom, value=-lr)
                        p.add_(state["mom"])
                    else:
                        p.addcdiv_(grad, denom, value=-lr)
