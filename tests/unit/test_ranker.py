"""models.ranker: the fused RankerStack gives each network's own Q-values."""

from __future__ import annotations

import pytest
import torch

from models.ranker import N_ACTION_SCALARS, N_CONTEXT, DuelingQNetwork, RankerStack


@pytest.mark.parametrize("sessions,candidates", [(1, 1), (3, 7), (64, 50)])
def test_a_stack_scores_like_its_networks_one_by_one(sessions, candidates):
    g = torch.Generator().manual_seed(sessions)
    nets = [DuelingQNetwork(hidden_size=16, seed=s) for s in (0, 1)]
    nets[1].set_weights(nets[1].get_weights() * 1.5)  # any two different weight vectors
    state, context = torch.randn(sessions, 16, generator=g), torch.randn(sessions, N_CONTEXT, generator=g)
    emb = torch.randn(sessions, candidates, 16, generator=g)
    scalars = torch.randn(sessions, candidates, N_ACTION_SCALARS, generator=g)
    with torch.no_grad():
        want = torch.stack([net(state, context, emb, scalars) for net in nets], -1)
    got = RankerStack(nets).q(state, context, emb, scalars)
    assert got.shape == (sessions, candidates, 2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(RankerStack(nets[:1]).q(state, context, emb, scalars), want[..., :1],
                               rtol=1e-5, atol=1e-5)


def test_a_stack_keeps_the_weights_it_was_built_with():
    """A loaded version is immutable: changing a network afterwards does not change its stack's scores."""
    net = DuelingQNetwork(hidden_size=8, seed=0)
    stack = RankerStack([net])
    x = (torch.ones(2, 8), torch.ones(2, N_CONTEXT), torch.ones(2, 3, 8), torch.ones(2, 3, N_ACTION_SCALARS))
    before = stack.q(*x).clone()
    net.set_weights(net.get_weights() * 3)
    torch.testing.assert_close(stack.q(*x), before)
