"""Multileave gradient descent: the step rule, its equivalence with DBGD for one explorer, and what users move."""

from __future__ import annotations

import numpy as np
import pytest

from models.dbgd import DuelingBanditGD
from models.interleave import CURRENT, EXPLORER, team_name
from models.mgd import MultileaveGD
from stream.control.dbgd_rounds import DbgdRounds


def test_w_moves_by_eta_times_the_mean_of_the_winners_directions():
    m = MultileaveGD(np.full(50, 2.0, dtype=np.float32), explorers=3, alpha=0.2, eta=0.5, window=10, seed=4)
    deltas = m.deltas.copy()
    assert deltas.shape == (3, 50) and np.all(np.abs(deltas) <= 0.4 + 1e-6)   # alpha * U(-1,1) * W, each row
    assert not np.allclose(deltas[0], deltas[1])
    m.record_impression(10)
    m.record_click(CURRENT, 3)
    m.record_click(EXPLORER, 4)          # explorer 0 beats the current ranker
    m.record_click("explorer2", 3)       # a tie is not a win
    m.record_click("explorer3", 9)       # explorer 2 wins
    out = m.maybe_update()
    assert out.winners == [0, 2] and out.accepted
    np.testing.assert_allclose(m.weights, 2.0 + 0.5 * (deltas[0] + deltas[2]) / 2, rtol=1e-6)
    assert not np.allclose(m.deltas, deltas)  # new explorers for the next round
    with pytest.raises(KeyError):
        m.record_click("explorer4")


def test_no_winner_keeps_w_and_the_window_is_waited_for():
    m = MultileaveGD(np.ones(5, dtype=np.float32), explorers=4, window=10, seed=1)
    m.record_impression(9)
    assert m.maybe_update() is None
    m.record_click(CURRENT, 2)
    out = m.maybe_update(force=True)  # a time limit ends a window early
    assert out.winners == [] and np.array_equal(m.weights, np.ones(5, dtype=np.float32))


def test_one_explorer_is_dbgd_exactly():
    """Same seed, same clicks: MGD with one explorer draws DBGD's explorers and makes its decisions."""
    w = np.linspace(0.5, 1.5, 40).astype(np.float32)
    d = DuelingBanditGD(w, alpha=0.2, eta=0.3, window=5, seed=7)
    m = MultileaveGD(w, explorers=1, alpha=0.2, eta=0.3, window=5, seed=7)
    rng = np.random.default_rng(0)
    for _ in range(30):
        np.testing.assert_array_equal(m.explorer_weights[0], d.explorer_weights)
        cur, exp = rng.integers(0, 5, 2)
        for learner in (d, m):
            learner.record_impression(5)
            learner.record_click(CURRENT, int(cur))
            learner.record_click(EXPLORER, int(exp))
        assert d.maybe_update().accepted == m.maybe_update().accepted
        np.testing.assert_array_equal(m.weights, d.weights)


def _run(u: np.ndarray, prefer: bool, seed: int, explorers: int = 4, rounds: int = 150) -> np.ndarray:
    """W's move after ``rounds`` windows of simulated users: each window 200 clicks fall on the teams' slots; users
    who prefer direction ``u`` click the team of the explorer closest to it twice as often as any other team;
    indifferent users click every team alike."""
    rng = np.random.default_rng(seed)
    w0 = np.ones(u.size, dtype=np.float32)
    m = MultileaveGD(w0, explorers=explorers, alpha=0.2, eta=0.2, window=100, seed=seed)
    for _ in range(rounds):
        share = np.ones(explorers + 1)
        if prefer:
            share[1 + int(np.argmax(m.deltas @ u))] = 2.0
        clicks = rng.multinomial(200, share / share.sum())
        m.record_impression(100)
        for j, n in enumerate(clicks):
            m.record_click(team_name(j), int(n))
        m.maybe_update()
    return m.weights - w0


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def test_users_who_prefer_a_direction_move_w_towards_it_and_indifferent_users_do_not():
    """Over 8 seeds: W follows the preferred direction in every run; indifferent users' clicks still let some
    explorer win by chance, so W wanders, but in no direction: the runs' mean move is small and unaligned."""
    u = np.random.default_rng(99).choice([-1.0, 1.0], size=100)
    moved = np.array([_run(u, prefer=True, seed=s) for s in range(8)])
    wandered = np.array([_run(u, prefer=False, seed=s) for s in range(8)])
    assert min(_cos(m, u) for m in moved) > 0.3
    assert _cos(moved.mean(0), u) > 0.75
    assert abs(u @ wandered.mean(0)) < 0.25 * (u @ moved.mean(0))          # no progress along u
    assert np.linalg.norm(wandered.mean(0)) < 0.5 * np.linalg.norm(moved.mean(0))


def test_rounds_decide_on_the_versions_explorers_and_draw_the_configured_number():
    """A version published with one explorer (a new major) gets a round of DBGD; the next has the settings' four."""
    rounds = DbgdRounds(alpha=0.1, eta=0.5, window=100, window_s=1e9, seed=0, explorers=4)
    w = np.ones(6, dtype=np.float32)
    step = rounds.observe("v1", w, w * 1.1, {"version": "v1", "impressions": 100, CURRENT: 1, EXPLORER: 3}, 0.0)
    np.testing.assert_allclose(step.weights, 1.05)
    assert step.explorers.shape == (4, 6) and step.summary["winners"] == [0]
    explorers = step.explorers
    message = {"version": "v2", "impressions": 100, CURRENT: 5, EXPLORER: 1, "explorer2": 6, "explorer3": 0,
               "explorer4": 9}
    step = rounds.observe("v2", step.weights, explorers, message, 1.0)
    assert step.summary["winners"] == [1, 3] and step.summary["clicks"]["explorer4"] == 9
    np.testing.assert_allclose(step.weights, 1.05 + 0.5 * ((explorers[1] - 1.05) + (explorers[3] - 1.05)) / 2,
                               rtol=1e-5)
    resumed = DbgdRounds(alpha=0.1, eta=0.5, window=100, window_s=1e9, seed=0, explorers=4)
    resumed.restore(rounds.to_dict())
    assert resumed.rounds == 2 and resumed.accepted_updates == 2
