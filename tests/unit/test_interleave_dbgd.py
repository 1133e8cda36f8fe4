"""Interleaving, credit assignment, DBGD and the ranker, on hand-made inputs."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from models.dbgd import DuelingBanditGD
from models.interleave import CURRENT, EXPLORER, credit, is_team, probabilistic, team_clicks, team_draft, \
    team_draft_batch, team_name
from models.ranker import N_ACTION_SCALARS, N_CONTEXT, SIMILARITY, DuelingQNetwork

rankings = st.lists(st.sampled_from([f"i{i}" for i in range(30)]), min_size=0, max_size=20, unique=True)


@settings(max_examples=300, deadline=None)
@given(rankings, rankings, st.integers(1, 15), st.integers(0, 10_000))
def test_team_draft_keeps_each_rankers_order_and_balances_teams(a, b, k, seed):
    items, teams = team_draft(a, b, k, random.Random(seed))
    assert len(items) == len(set(items)) == len(teams) == min(k, len(set(a) | set(b)))
    for team, ranking in ((CURRENT, a), (EXPLORER, b)):
        mine = [i for i, t in zip(items, teams) if t == team]
        assert all(i in ranking for i in mine)
        assert mine == sorted(mine, key=ranking.index)  # relative order preserved
    # every prefix is balanced within one pick while both rankers still have items to give
    if set(a) >= set(items) and set(b) >= set(items):
        for n in range(1, len(teams) + 1):
            assert abs(teams[:n].count(CURRENT) - teams[:n].count(EXPLORER)) <= 1


def _codes(rankings: list[list[str]], vocab: dict[str, int], width: int) -> np.ndarray:
    out = np.full((len(rankings), width), -1, np.int64)
    for r, ranking in enumerate(rankings):
        out[r, : len(ranking)] = [vocab[i] for i in ranking]
    return out


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 5).flatmap(lambda t: st.lists(st.lists(rankings, min_size=t, max_size=t), min_size=1,
                                                       max_size=8)),
       st.integers(1, 12), st.integers(0, 10_000))
def test_the_batch_team_draft_multileaves_by_the_rule_pick_by_pick(sessions, k, seed):
    """Every slate of team_draft_batch, for 2 to 5 rankers, is a team-draft (multileaving) outcome: replayed pick
    by pick, the team that picks has the fewest picks among the teams with an item left (random only on ties),
    and it adds its best item not yet taken — so each ranker's items keep its order; positions are exact."""
    vocab = {f"i{i}": i for i in range(30)}
    width = max(1, max(len(x) for lists in sessions for x in lists))
    orders = np.stack([_codes(list(lists), vocab, width) for lists in sessions])  # (B, T, D)
    slate, team, position = team_draft_batch(orders, k, np.random.default_rng(seed))
    for r, lists in enumerate(sessions):
        codes = [[vocab[i] for i in ranking] for ranking in lists]
        taken: list[int] = []
        picks = [0] * len(codes)
        for slot in range(k):
            best = [next((c for c in ranking if c not in taken), None) for ranking in codes]
            able = [t for t, b in enumerate(best) if b is not None]
            if not able:
                assert slate[r, slot:].tolist() == [-1] * (k - slot)
                break
            t = int(team[r, slot])
            assert t in able and picks[t] == min(picks[a] for a in able)
            assert slate[r, slot] == best[t] and codes[t][position[r, slot]] == slate[r, slot]
            taken.append(int(slate[r, slot]))
            picks[t] += 1


def test_the_batch_team_draft_breaks_ties_at_random():
    disjoint = np.stack([np.tile(np.arange(10 * t, 10 * t + 10), (3000, 1)) for t in range(3)], 1)  # (3000, 3, 10)
    _, team, _ = team_draft_batch(disjoint, 6, np.random.default_rng(0))
    first = np.bincount(team[:, 0], minlength=3) / len(team)
    assert np.all(np.abs(first - 1 / 3) < 0.03), first
    for round_start in (0, 3):  # each round of three picks gives every team one slot
        assert (np.sort(team[:, round_start: round_start + 3], 1) == [0, 1, 2]).all()


def test_team_names_and_credit_for_multileaved_slates():
    assert [team_name(j) for j in range(3)] == [CURRENT, EXPLORER, "explorer2"]
    assert all(is_team(team_name(j)) for j in range(12)) and not is_team("impressions") and not is_team("version")
    teams = [CURRENT, "explorer2", EXPLORER, "explorer2"]
    assert credit(teams, [1, 3, 2]) == {CURRENT: 0, EXPLORER: 1, "explorer2": 2}
    assert team_clicks({"version": "v1", "impressions": 9, CURRENT: 1, "explorer3": 4}) == {CURRENT: 1, "explorer3": 4}


def test_team_draft_credit_is_exact():
    items, teams = team_draft(["a", "b", "c"], ["c", "d", "e"], 4, random.Random(3))
    clicked = [i for i, t in enumerate(teams) if t == EXPLORER]
    assert credit(teams, clicked) == {CURRENT: 0, EXPLORER: len(clicked)}
    assert credit(teams, [0, 1, 2, 3]) == {CURRENT: teams.count(CURRENT), EXPLORER: teams.count(EXPLORER)}
    assert credit(teams, [99, -1]) == {CURRENT: 0, EXPLORER: 0}


def test_identical_rankings_interleave_to_the_same_list():
    items, _ = team_draft(list("abcdef"), list("abcdef"), 6, random.Random(0))
    assert items == list("abcdef")


def test_probabilistic_interleaving_favours_top_ranks():
    rng = random.Random(0)
    firsts = [probabilistic(list("abcdefgh"), list("abcdefgh"), 3, rng)[0][0] for _ in range(2000)]
    assert firsts.count("a") > 0.7 * len(firsts)
    items, teams = probabilistic(list("abc"), list("xyz"), 6, rng)
    assert sorted(items) == list("abcxyz") and set(teams) == {CURRENT, EXPLORER}


def test_dbgd_steps_towards_a_winning_explorer_and_redraws():
    d = DuelingBanditGD(np.full(1000, 2.0, dtype=np.float32), alpha=0.1, eta=0.05, window=10, seed=1)
    delta = d.delta.copy()
    assert np.all(np.abs(delta) <= 0.2 + 1e-6) and np.abs(delta).max() > 0.15  # alpha * U(-1,1) * W
    d.record_impression(10)
    d.record_click(EXPLORER, 3)
    d.record_click(CURRENT, 2)
    out = d.maybe_update()
    assert out.accepted and np.allclose(d.weights, 2.0 + 0.05 * delta)
    assert not np.allclose(d.delta, delta)  # a new explorer for the next round


def test_dbgd_keeps_w_when_the_explorer_ties_or_loses_and_waits_for_the_window():
    d = DuelingBanditGD(np.ones(5, dtype=np.float32), window=10, seed=2)
    d.record_impression(9)
    assert d.maybe_update() is None
    assert d.maybe_update(force=True) is not None  # a time limit ends a window early
    d.record_impression(10)
    d.record_click(EXPLORER, 2)
    d.record_click(CURRENT, 2)
    assert d.maybe_update().accepted is False and np.allclose(d.weights, 1.0)


def test_indifferent_users_leave_w_essentially_unchanged_and_preferring_ones_move_it():
    rng = np.random.default_rng(0)
    moved = {}
    for prefer in (0.5, 0.8):
        d = DuelingBanditGD(np.ones(200, dtype=np.float32), alpha=0.1, eta=0.05, window=200, seed=3)
        for _ in range(50):
            clicks = rng.random(40) < prefer  # 40 credited clicks a window, share `prefer` to the explorer
            d.record_impression(200)
            d.record_click(EXPLORER, int(clicks.sum()))
            d.record_click(CURRENT, int((~clicks).sum()))
            d.maybe_update()
        moved[prefer] = d.accepted_updates
    assert moved[0.8] >= 48 and moved[0.5] <= 30, moved


def test_ranker_starts_as_the_similarity_order():
    q = DuelingQNetwork(hidden_size=16, seed=0)
    state, ctx = torch.randn(4, 16), torch.randn(4, N_CONTEXT)
    emb = torch.randn(4, 30, 16)
    scal = torch.zeros(4, 30, N_ACTION_SCALARS)
    scal[..., SIMILARITY] = torch.randn(4, 30) * 3
    scores = q(state, ctx, emb, scal)
    by_q = scores.argsort(dim=1, descending=True)[:, :5]
    by_sim = scal[..., SIMILARITY].argsort(dim=1, descending=True)[:, :5]
    overlap = np.mean([len(set(a.tolist()) & set(b.tolist())) / 5 for a, b in zip(by_q, by_sim)])
    assert overlap >= 0.8


def test_ranker_rejects_a_weight_vector_of_the_wrong_size():
    with pytest.raises(ValueError, match="does not fit"):
        DuelingQNetwork(hidden_size=8).set_weights(np.zeros(3, dtype=np.float32))


def test_the_explorer_ranks_differently_from_the_current_ranker():
    """DBGD compares two rankings; an explorer that always ranks as W does teaches nothing (it once did)."""
    q, e = DuelingQNetwork(hidden_size=16, seed=0), DuelingQNetwork(hidden_size=16, seed=0)
    w = q.get_weights()
    e.set_weights(DuelingBanditGD(w, alpha=0.1, seed=1).explorer_weights)
    gen = torch.Generator().manual_seed(0)
    state, ctx = torch.randn(200, 16, generator=gen), torch.randn(200, N_CONTEXT, generator=gen)
    emb = torch.randn(200, 50, 16, generator=gen)
    scal = torch.zeros(200, 50, N_ACTION_SCALARS)
    scal[..., 0] = torch.rand(200, 50, generator=gen) * 5       # log1p(recent clicks)
    scal[..., 1] = torch.rand(200, 50, generator=gen) * 0.2     # rolling CTR
    scal[..., 2] = torch.rand(200, 50, generator=gen)           # freshness
    scal[..., SIMILARITY] = torch.randn(200, 50, generator=gen) * 2
    with torch.no_grad():
        top_q = q(state, ctx, emb, scal).topk(10, dim=1).indices
        top_e = e(state, ctx, emb, scal).topk(10, dim=1).indices
    differ = np.mean([a.tolist() != b.tolist() for a, b in zip(top_q, top_e)])  # the top 10, in order
    assert differ > 0.2, differ
