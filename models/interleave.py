"""Interleaving two rankings into one slate, remembering which ranker ("team") put each item there.

DRN's minor update compares the current ranker with a perturbed explorer on live traffic: both
rank, their lists are merged, and clicks are credited to the team that contributed the clicked slot.

* **team-draft** (Radlinski et al., 2008): the team with fewer picks so far (a coin breaks ties)
  adds its highest-ranked item not yet in the slate.  Each team's items keep their ranker's order.
* **team-draft multileaving** (Schuth et al., 2014): the same rule for more than two teams — the current
  ranker and several explorers (multileave gradient descent, :mod:`models.mgd`); :func:`team_draft_batch`.
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

import numpy as np

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


def team_draft_batch(orders: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Team-draft interleaving (two rankers) or **multileaving** (several; Schuth et al., CIKM 2014) for a whole
    batch, on integer item codes ``orders`` (B, T, D): session b's candidates in ranker t's order, -1 after its end.

    Returns the slates' codes (B, k; -1 where every list ran out), each slot's team (B, k: the ranker's index
    in ``orders``, 0 = the current ranker) and the slot's position in its team's list (B, k).  The rule of
    :func:`team_draft`, for any number of teams: the team with the fewest picks so far (random priorities
    break ties) adds its best item not yet in the slate, so each ranker's items keep its order and every
    team gets a fair share of the slots.  One slot of every slate per step: k steps of array operations
    instead of a Python loop per slate (256 slates of two teams: 0.5 ms against 3-4 ms).  The coins come
    from ``rng`` (numpy), so a seed gives other slates than :func:`team_draft`'s, drawn by the same rule.

    >>> orders = np.array([[[0, 1, 2, 3], [2, 0, 4, 5], [5, 4, 3, 2]]])
    >>> slate, team, position = team_draft_batch(orders, 3, np.random.default_rng(0))
    >>> sorted(team[0].tolist()), len(set(slate[0].tolist()))
    ([0, 1, 2], 3)
    """
    b, t, _ = orders.shape
    rows = np.arange(b)
    taken = orders < 0                                  # padding counts as taken
    picks = np.zeros((b, t), np.float64)
    slate, team = np.full((b, k), -1, np.int64), np.zeros((b, k), np.int64)
    position = np.zeros((b, k), np.int64)
    ties = rng.random((b, k, t))                        # in [0, 1): orders teams with equal picks at random
    for slot in range(k):
        open_ = ~taken
        has = open_.any(2)                              # (B, T): the team still has an item to give
        best = open_.argmax(2)                          # each team's best item not yet taken
        chosen = np.where(has, picks + ties[:, slot], np.inf).argmin(1)
        active = has.any(1)
        pos = best[rows, chosen]
        item = np.where(active, orders[rows, chosen, pos], -1)   # -1 for finished rows: matches only padding
        slate[:, slot], team[:, slot], position[:, slot] = item, chosen, pos
        picks[rows, chosen] += active
        taken |= orders == item[:, None, None]
    return slate, team, position


def team_name(index: int) -> str:
    """The name a slot's team goes by in slates and feedback: 0 the current ranker, 1 the explorer, then
    ``explorer2``, ``explorer3``... (multileaving: one team per explorer).

    >>> [team_name(i) for i in range(4)]
    ['current', 'explorer', 'explorer2', 'explorer3']
    """
    return CURRENT if index == 0 else EXPLORER if index == 1 else f"{EXPLORER}{index}"


def is_team(key: str) -> bool:
    """Whether a feedback message's key counts a team's clicks (:func:`team_name`)."""
    return key in (CURRENT, EXPLORER) or (key.startswith(EXPLORER) and key[len(EXPLORER):].isdigit())


def team_clicks(message: dict) -> dict[str, int]:
    """The clicks credited to each team in a feedback message ``{version, impressions, current, explorer, ...}``."""
    return {key: int(value) for key, value in message.items() if is_team(key)}


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
            out[teams[pos]] = out.get(teams[pos], 0) + 1
    return out
