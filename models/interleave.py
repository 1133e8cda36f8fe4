"""Interleaving two rankings into one slate, remembering which ranker ("team") put each item there.

DRN's minor update compares the current ranker with a perturbed explorer on live traffic: both
rank, their lists are merged, and clicks are credited to the team that contributed the clicked slot.

* **team-draft** (Radlinski et al., 2008): the team with fewer picks so far (a coin breaks ties)
  adds its highest-ranked item not yet in the slate.  Each team's items keep their ranker's order.
* **probabilistic** (Hofmann et al., 2011): for each slot a random team draws an item with
  probability falling as 1/rank^tau over its remaining items.

Examples
--------
>>> import random
>>> items, teams = team_draft(["a", "b", "c", "d"], ["c", "a", "e", "f"], k=4, rng=random.Random(1))
>>> len(items), sorted(set(teams))
(4, ['current', 'explorer'])
>>> credit(["current", "explorer", "current"], [0, 2])
{'current': 2, 'explorer': 0}
"""

from __future__ import annotations

import random
from collections.abc import Sequence

CURRENT, EXPLORER = "current", "explorer"


def team_draft(current: Sequence[str], explorer: Sequence[str], k: int,
               rng: random.Random) -> tuple[list[str], list[str]]:
    """Merge two rankings by team-draft interleaving; return the slate and each slot's team.

    Called once per click, so it is written as a plain loop over two pointers.
    """
    slate: list[str] = []
    teams: list[str] = []
    taken: set[str] = set()
    i = j = 0                      # each list's next candidate
    n_cur = n_exp = 0              # picks so far
    len_cur, len_exp = len(current), len(explorer)
    while len(slate) < k:
        while i < len_cur and current[i] in taken:
            i += 1
        while j < len_exp and explorer[j] in taken:
            j += 1
        if i == len_cur and j == len_exp:
            break
        if j == len_exp or (i < len_cur and (n_cur < n_exp or (n_cur == n_exp and rng.random() < 0.5))):
            item, team, i, n_cur = current[i], CURRENT, i + 1, n_cur + 1
        else:
            item, team, j, n_exp = explorer[j], EXPLORER, j + 1, n_exp + 1
        slate.append(item)
        teams.append(team)
        taken.add(item)
    return slate, teams


def probabilistic(current: Sequence[str], explorer: Sequence[str], k: int, rng: random.Random,
                  tau: float = 3.0) -> tuple[list[str], list[str]]:
    """Merge two rankings by probabilistic interleaving (softmax over ranks, 1/rank^tau)."""
    remaining = {CURRENT: list(current), EXPLORER: list(explorer)}
    slate: list[str] = []
    teams: list[str] = []
    while len(slate) < k and (remaining[CURRENT] or remaining[EXPLORER]):
        team = rng.choice([t for t in (CURRENT, EXPLORER) if remaining[t]])
        lst = remaining[team]
        weights = [1.0 / (r + 1) ** tau for r in range(len(lst))]
        item = rng.choices(lst, weights=weights)[0]
        slate.append(item)
        teams.append(team)
        for t in (CURRENT, EXPLORER):
            if item in remaining[t]:
                remaining[t].remove(item)
    return slate, teams


def credit(teams: Sequence[str], clicked_positions: Sequence[int]) -> dict[str, int]:
    """Clicks per team for the clicked slots of one interleaved slate."""
    out = {CURRENT: 0, EXPLORER: 0}
    for pos in clicked_positions:
        if 0 <= pos < len(teams):
            out[teams[pos]] += 1
    return out
