"""The simulated world: a catalog of items in categories, and a population of users.

Items have latent vectors grouped around their category's centre, a Zipf-like popularity, and a
launch time (most exist from the start, the rest are launched during the run).  Users have a
preference over categories and a latent vector built from it.  Everything is drawn from one
seeded generator, so a seed fixes the world.

Examples
--------
>>> w = World(WorldConfig(n_items=100, n_categories=5, n_users=10, seed=1))
>>> w.item_vectors.shape, w.user_vectors.shape, int(w.categories.max()) < 5
((100, 16), (10, 16), True)
>>> bool(np.allclose(World(WorldConfig(n_items=100, n_categories=5, n_users=10, seed=1)).item_vectors, w.item_vectors))
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class WorldConfig:
    n_items: int = 5000
    n_categories: int = 20
    n_users: int = 2000
    dim: int = 16
    zipf_exponent: float = 1.0
    launched_later: float = 0.1   # share of items launched during the run (new-item arrivals)
    duration_s: float = 600.0     # launches are spread over this many seconds of simulated time
    seed: int = 0


class World:
    """Catalog and users; all arrays indexed by item index / user index."""

    def __init__(self, config: WorldConfig) -> None:
        self.config = c = config
        rng = np.random.default_rng(c.seed)
        centres = rng.normal(size=(c.n_categories, c.dim))
        self.category_centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        self.categories = rng.integers(c.n_categories, size=c.n_items)
        vecs = self.category_centres[self.categories] + 0.6 * rng.normal(size=(c.n_items, c.dim)) / np.sqrt(c.dim)
        self.item_vectors = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
        ranks = rng.permutation(c.n_items) + 1
        pop = 1.0 / ranks**c.zipf_exponent
        self.popularity = pop / pop.sum()
        self.log_popularity = np.log(self.popularity) - np.log(self.popularity).mean()
        n_later = int(round(c.launched_later * c.n_items))
        self.launch_time = np.zeros(c.n_items)
        later = rng.choice(c.n_items, size=n_later, replace=False)
        self.launch_time[later] = np.sort(rng.uniform(0, c.duration_s, size=n_later))
        self.user_category_weights = rng.dirichlet(np.full(c.n_categories, 0.3), size=c.n_users)
        uvec = self.user_category_weights @ self.category_centres + 0.3 * rng.normal(size=(c.n_users, c.dim))
        self.user_vectors = uvec / np.linalg.norm(uvec, axis=1, keepdims=True)
        self.item_ids = np.array([f"i{i}" for i in range(c.n_items)])
        # drawn last, so the arrays above stay what a seed gave before seasons existed
        self.season = rng.integers(2, size=c.n_items)  # which season an item is in fashion (Scenario.season_shift)

    @property
    def n_items(self) -> int:
        return self.config.n_items

    def launched(self, t: float) -> np.ndarray:
        """Mask of items available at simulated time ``t``."""
        return self.launch_time <= t

    def item_index(self, item_id: str) -> int:
        """Index of a catalog item id (``i<N>``), or -1 for an id the world does not know."""
        if item_id.startswith("i") and item_id[1:].isdigit():
            idx = int(item_id[1:])
            return idx if idx < self.n_items else -1
        return -1
