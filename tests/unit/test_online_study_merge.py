"""The online study's --merge: variants run in separate processes on the same seeds are paired by seed."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from bench.online_study import StudyConfig, main, summarise


def _windows(level_before: float, level_after: float, cfg: StudyConfig) -> list[dict]:
    out = []
    for start in np.arange(0.0, cfg.duration, cfg.window_s):
        ctr = level_before if start < cfg.drift_time else level_after
        out.append({"start_s": float(start), "end_s": float(start + cfg.window_s), "slates": 100, "events": 100,
                    "ctr": ctr, "expected_ctr": ctr, "oracle_ctr": 0.5, "regret": 0.5 - ctr})
    return out


def _run(path, variant: str, seeds: list[int], after: dict[int, float], cfg: StudyConfig) -> None:
    per_seed, windows = [], []
    for seed in seeds:
        w = _windows(0.3, after[seed], cfg)
        per_seed.append({variant: summarise(variant, w, cfg, [], 1.0)})
        windows.append({variant: w})
    path.write_text(json.dumps({"config": asdict(cfg), "seeds": seeds, "per_seed": per_seed,
                                "per_seed_windows": windows, "command": f"run {variant}"}))


def test_merge_pairs_variants_from_separate_runs_by_seed(tmp_path, capsys):
    cfg = StudyConfig()
    full = {0: 0.30, 1: 0.32, 2: 0.31}
    frozen = {0: 0.20, 1: 0.25, 2: 0.21}
    _run(tmp_path / "full.json", "full", [0, 1, 2], full, cfg)
    _run(tmp_path / "frozen.json", "frozen", [2, 0, 1], frozen, cfg)   # another order: pairing is by seed
    assert main(["--merge", str(tmp_path / "full.json"), str(tmp_path / "frozen.json"), "--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    diff = out["across_seeds"]["differences"]["full - frozen"]["ctr_post_drift_settled"]
    assert out["seeds"] == [0, 1, 2]
    assert diff["values"] == pytest.approx([full[s] - frozen[s] for s in (0, 1, 2)])
    assert (tmp_path / "online_study_seeds.png").stat().st_size > 0
    _run(tmp_path / "again.json", "full", [1], full, cfg)
    with pytest.raises(SystemExit, match="seed 1 has variant"):
        main(["--merge", str(tmp_path / "full.json"), str(tmp_path / "again.json"), "--out", str(tmp_path)])
