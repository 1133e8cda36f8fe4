"""Sessions of simulated users: who comes, what they are interested in, how they browse on their own.

Each session draws from its own generator seeded by (run seed, session number), so what a session
does depends only on the seed and on the slates it is shown, never on how Kafka interleaves it with
other sessions: a run is reproducible for a seed.

Session lengths follow the real data (``../shared/data/yoochoose-100k``: at least 2 clicks, mean
about 4); gaps between clicks follow its log-normal shape (median about 53 s, log-sd 1.5), which
the closed loop scales down to run faster than real time.  Interest drifts within a session: after
each click the session moves to another of the user's categories with probability ``switch``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simulator.clickmodel import ClickModel
from simulator.world import World

GAP_MEDIAN_S = 53.0
GAP_LOG_SD = 1.5


@dataclass
class Session:
    id: str
    user: int
    category: int
    remaining: int
    rng: np.random.Generator
    clicks: list[int] = field(default_factory=list)


class Population:
    def __init__(self, world: World, clicks: ClickModel, seed: int = 0, mean_length: float = 4.2,
                 switch: float = 0.25, organic_in_category: float = 0.8) -> None:
        self.world, self.clicks, self.seed = world, clicks, seed
        self.mean_length, self.switch, self.organic_in_category = mean_length, switch, organic_in_category
        self.started = 0

    def new_session(self) -> Session:
        n = self.started
        self.started += 1
        rng = np.random.default_rng([self.seed, n])
        user = int(rng.integers(self.world.config.n_users))  # users come back: a finite population
        length = 2 + int(rng.geometric(1.0 / (self.mean_length - 1.0))) - 1
        return Session(f"s{self.seed}-{n}", user, self._category(rng, user), length, rng)

    def _category(self, rng: np.random.Generator, user: int) -> int:
        return int(rng.choice(self.world.config.n_categories, p=self.world.user_category_weights[user]))

    def organic_click(self, s: Session, t: float) -> int:
        """An item the user finds on their own: mostly in the current category, by popularity and taste.

        A preference drift (:class:`simulator.scenario.Scenario`) shows in what users find on their own
        too, not only in what attracts them on a slate: items of the season in fashion are found more
        often, and out-of-category browsing leans towards a category in fashion.
        """
        w = self.world
        launched = w.launched(t)
        scenario = self.clicks.scenario
        season = np.exp(scenario.season_shift(t, w.season))
        if s.rng.random() < self.organic_in_category:
            weights = w.popularity**0.7 * np.exp(3.0 * (w.item_vectors @ w.user_vectors[s.user]))
            weights = weights * (w.categories == s.category) * launched * season
        else:  # browsing elsewhere follows the crowd: popularity, and the scenario's trend when one is on
            shift = scenario.category_shift(t, w.config.n_categories)[w.categories]
            weights = w.popularity * launched * np.exp(shift) * season
        if weights.sum() <= 0:
            weights = launched.astype(float)
        return int(s.rng.choice(w.n_items, p=weights / weights.sum()))

    def after_click(self, s: Session, item: int) -> None:
        s.clicks.append(item)
        s.remaining -= 1
        if s.rng.random() < self.switch:
            s.category = self._category(s.rng, s.user)

    def think_time(self, s: Session) -> float:
        """Seconds (real-data scale) until the session's next click."""
        return float(s.rng.lognormal(np.log(GAP_MEDIAN_S), GAP_LOG_SD))


def calibrate(world: World, clicks: ClickModel, n_requests: int = 50_000, slate_size: int = 3,
              seed: int = 0) -> dict:
    """Click-through of uniformly random slates and of oracle slates on simulated requests.

    CTR here is clicks per shown item (the Open Bandit Dataset's definition); ``position_ctr`` is
    per slot.  Returns figures a test can hold to the calibration targets.
    """
    pop = Population(world, clicks, seed=seed)
    rng = np.random.default_rng(seed + 1)
    pos_clicks = np.zeros(slate_size)
    random_p, oracle_p, n = 0.0, 0.0, 0
    session = pop.new_session()
    for i in range(n_requests):
        if session.remaining <= 0:
            session = pop.new_session()
        t = world.config.duration_s * i / n_requests
        attraction = clicks.attraction(session.user, session.category, t)
        slate = rng.choice(np.flatnonzero(attraction > 0), size=slate_size, replace=False)
        position = clicks.respond(rng, attraction[slate])
        if position is not None:
            pos_clicks[position] += 1
        random_p += clicks.p_click(attraction[slate])
        oracle_p += clicks.oracle(attraction, slate_size)[1]
        n += 1
        pop.after_click(session, pop.organic_click(session, t) if position is None else int(slate[position]))
    return {
        "requests": n, "slate_size": slate_size,
        "random_ctr": float(pos_clicks.sum() / (n * slate_size)),
        "random_expected_ctr": random_p / (n * slate_size),
        "position_ctr": (pos_clicks / n).tolist(),
        "oracle_expected_ctr": oracle_p / (n * slate_size),
    }
