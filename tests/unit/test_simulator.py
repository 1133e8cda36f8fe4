"""The click simulator's statistics, seeded: calibration, determinism, scenarios."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.clickmodel import ClickModel
from simulator.population import Population, calibrate
from simulator.scenario import Scenario
from simulator.world import World, WorldConfig


def make(seed=0, scenario=None, **cfg):
    world = World(WorldConfig(seed=seed, **cfg))
    clicks = ClickModel(world, scenario)
    return world, clicks


def test_random_slates_click_like_the_logged_random_policy_and_the_oracle_far_better():
    world, clicks = make(seed=0)
    result = calibrate(world, clicks, n_requests=20_000, slate_size=3, seed=0)
    # Open Bandit Dataset, random policy: 0.38% of shown items clicked (../shared/data/obd)
    assert 0.0025 <= result["random_ctr"] <= 0.0060, result
    assert abs(result["random_ctr"] - result["random_expected_ctr"]) < 0.0015
    first, _, third = result["position_ctr"]
    assert first > 1.4 * third, result  # position effect: the top slot is examined more
    assert result["oracle_expected_ctr"] > 10 * result["random_ctr"]


def test_same_seed_same_world_sessions_and_clicks():
    def trace(seed):
        world, clicks = make(seed=seed, n_items=500, n_users=50)
        pop = Population(world, clicks, seed=seed)
        out = []
        for _ in range(30):
            s = pop.new_session()
            while s.remaining > 0:
                item = pop.organic_click(s, 1.0)
                pop.after_click(s, item)
                out.append((s.id, s.user, s.category, item, round(pop.think_time(s), 6)))
        return out

    assert trace(5) == trace(5)
    assert trace(5) != trace(6)
    assert calibrate(*make(seed=3, n_items=500), n_requests=500) == calibrate(*make(seed=3, n_items=500), n_requests=500)


def test_session_lengths_and_gaps_are_of_the_real_data_order():
    world, clicks = make(seed=1, n_items=300, n_users=100)
    pop = Population(world, clicks, seed=1)
    sessions = [pop.new_session() for _ in range(4000)]
    lengths = np.array([s.remaining for s in sessions])
    assert lengths.min() >= 2 and 3.5 < lengths.mean() < 5.0
    gaps = np.array([pop.think_time(s) for s in sessions])
    assert 40 < np.median(gaps) < 70  # yoochoose-100k: median gap about 53 s


def test_drift_changes_which_categories_get_clicked():
    scenario = Scenario(drift_at=100.0, drift_category=4)
    world, clicks = make(seed=2, scenario=scenario, n_items=2000, n_users=300, launched_later=0.0)
    pop = Population(world, clicks, seed=2)
    rng = np.random.default_rng(0)

    def clicked_categories(t, n=3000):
        cats = []
        for _ in range(n):
            s = pop.new_session()
            attraction = clicks.attraction(s.user, s.category, t)
            slate = rng.choice(world.n_items, size=10, replace=False)
            pos = clicks.respond(rng, attraction[slate])
            if pos is not None:
                cats.append(world.categories[slate[pos]])
        return np.array(cats)

    before, after = clicked_categories(50.0), clicked_categories(150.0)
    share = lambda c: float(np.mean(c == 4))  # noqa: E731
    assert share(after) > 2 * share(before) + 0.05, (share(before), share(after))


def test_items_launched_later_cannot_be_clicked_before_their_launch():
    world, clicks = make(seed=4, n_items=400, launched_later=0.5, duration_s=100.0)
    late = np.flatnonzero(world.launch_time > 50)
    assert len(late) > 50
    assert np.all(clicks.attraction(0, 0, 10.0)[late] == 0)
    assert np.all(clicks.attraction(0, 0, 100.0)[late] > 0)


def test_flash_of_popularity_lifts_one_item_for_a_while():
    scenario = Scenario(flash_at=10.0, flash_duration=5.0, flash_item=7)
    world, clicks = make(seed=0, scenario=scenario, n_items=100, launched_later=0.0)
    base, during, after = (clicks.attraction(0, 0, t)[7] for t in (5.0, 12.0, 20.0))
    assert during > 5 * base and after == pytest.approx(base)


def test_unknown_scenario_is_an_error():
    with pytest.raises(ValueError, match="unknown scenario"):
        Scenario.preset("earthquake", 60)


def test_the_season_turns_at_the_drift_in_slates_and_in_organic_browsing():
    scenario = Scenario.preset("drift", duration_s=200.0, seed=0)
    assert scenario.drift_at == 100.0 and scenario.season_strength > 0
    world, clicks = make(seed=3, scenario=scenario, n_items=1000, n_users=200, launched_later=0.0)
    pop = Population(world, clicks, seed=3)

    def share_in_season_1(t, n=2000):
        found = [world.season[pop.organic_click(pop.new_session(), t)] for _ in range(n)]
        return float(np.mean(found))

    before, after = share_in_season_1(50.0), share_in_season_1(150.0)
    assert before < 0.3 and after > 0.7, (before, after)
    s = pop.new_session()
    a_before, a_after = clicks.attraction(s.user, s.category, 50.0), clicks.attraction(s.user, s.category, 150.0)
    # the best slate is about as good after the turn as before (a learner can recover), but with other items
    _, best_before = clicks.oracle(a_before, 10)
    _, best_after = clicks.oracle(a_after, 10)
    assert 0.7 < best_after / best_before < 1.4
    assert np.mean(world.season[clicks.oracle(a_after, 10)[0]]) > np.mean(world.season[clicks.oracle(a_before, 10)[0]])
