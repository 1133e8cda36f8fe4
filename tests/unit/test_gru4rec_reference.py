"""The side-by-side run of the reference GRU4Rec: the parameters it is handed and a clear error without it."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.gru4rec_quality import CONFIGS
from bench.gru4rec_reference import in_training_order, parameter_string, run_reference


def test_the_reference_gets_the_same_parameters_as_the_project():
    _, params = CONFIGS["diginetica-bprmax"]
    given = dict(pair.split("=") for pair in parameter_string(params).split(","))
    assert given["loss"] == "bpr-max" and given["layers"] == "512" and given["n_epochs"] == "10"
    assert float(given["learning_rate"]) == params.learning_rate and float(given["bpreg"]) == params.bpreg
    assert given["constrained_embedding"] == "True"
    params.layers = [64, 32]
    try:
        assert "layers=64/32" in parameter_string(params)  # the reference's list separator
    finally:
        params.layers = [512]


def test_a_folder_that_is_not_the_reference_is_refused(tmp_path):
    frame = pd.DataFrame({"SessionId": [1, 1], "ItemId": ["a", "b"], "Time": [0.0, 1.0]})
    with pytest.raises(SystemExit, match="not a checkout of the reference"):
        run_reference(tmp_path, frame, frame, CONFIGS["yoochoose-xe"][1])


def test_sessions_that_start_together_reach_the_reference_in_the_projects_order():
    # Diginetica-like: every session starts at position 0; session 9 also starts later than the others
    clicks = pd.DataFrame({"SessionId": [5, 5, 3, 3, 3, 9, 9, 7, 7],
                           "ItemId": list("abcdefghi"),
                           "Time": [0, 1, 0, 1, 2, 4, 5, 0, 1]})
    timed = in_training_order(clicks)
    assert timed["Time"].is_unique
    first = timed.groupby("SessionId")["Time"].min()
    # by first time; the sessions tied at 0 in the order the project takes them (sorted by SessionId)
    assert first.sort_values(kind="quicksort").index.tolist() == [3, 5, 7, 9]
    within = timed.sort_values("Time")
    assert within[within["SessionId"] == 3]["ItemId"].tolist() == ["c", "d", "e"]
