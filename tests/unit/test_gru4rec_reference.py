"""The side-by-side run of the reference GRU4Rec: the parameters it is handed and a clear error without it."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.gru4rec_quality import CONFIGS
from bench.gru4rec_reference import parameter_string, run_reference


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
