"""Run the reference GRU4Rec (a checkout of ``hidasib/GRU4Rec_PyTorch_Official``, unchanged) beside the project.

The reference's code never enters this repository: ``bench.gru4rec_quality --reference PATH`` runs its own
``run.py`` in a process of its own, on the same train/test files and the same parameters (passed as its
``-ps`` parameter string, built from :class:`models.gru4rec.GRU4RecParams`, whose names are the
reference's), with its own evaluation in conservative tie mode, and reads back the figures it prints.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from models.gru4rec import GRU4RecParams

#: the reference's training parameters (run.py -ps); everything else is the project's own
PARAMS = ("loss", "constrained_embedding", "embedding", "elu_param", "layers", "n_epochs", "batch_size",
          "dropout_p_embed", "dropout_p_hidden", "learning_rate", "momentum", "n_sample", "sample_alpha", "bpreg",
          "logq")


def parameter_string(params: GRU4RecParams) -> str:
    """``name=value,...`` as the reference's run.py reads it (lists joined by ``/``)."""
    def text(v) -> str:
        return "/".join(map(str, v)) if isinstance(v, list) else str(v)
    return ",".join(f"{name}={text(getattr(params, name))}" for name in PARAMS)


def write_tsv(frame: pd.DataFrame, path: Path) -> Path:
    """The GRU4Rec input format: SessionId, ItemId, Time, tab separated, with a header."""
    frame[["SessionId", "ItemId", "Time"]].to_csv(path, sep="\t", index=False)
    return path


def in_training_order(frame: pd.DataFrame) -> pd.DataFrame:
    """The clicks with ``Time`` rewritten so that it orders sessions and clicks as the project trains on them.

    The reference orders sessions by their first ``Time`` with NumPy's unstable default sort, so sessions that
    start at the same time come in an order of its own: on Diginetica, whose ``Time`` is the click's position
    (every session starts at 0), NumPy 1.26 scatters the date-sorted sessions into blocks.  The project takes
    tied sessions in the file's order.  Ranks make both train on the same sequence: session ``k`` in that order
    gets times ``k * (longest + 1) + position``.  Only the order matters to GRU4Rec, never the times themselves.
    """
    frame = frame.sort_values(["SessionId", "Time"], kind="mergesort")
    codes = pd.factorize(frame["SessionId"])[0]  # sessions in the sorted frame's order
    position = frame.groupby(codes).cumcount().to_numpy()
    first = frame.groupby(codes)["Time"].min().to_numpy()
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="mergesort")] = np.arange(len(first))  # the project's rule: ties keep file order
    return frame.assign(Time=rank[codes] * (int(position.max()) + 1) + position)


def run_reference(checkout: Path, train: pd.DataFrame, test: pd.DataFrame, params: GRU4RecParams,
                  device: str = "cpu", python: str = sys.executable, threads: int | None = None) -> dict:
    """Train and evaluate the reference once; Recall/MRR at 20 and 10 (conservative ties) and its timings.

    ``python`` runs it: an interpreter with torch, numpy, pandas and joblib (the reference needs joblib,
    which the project does not); ``threads`` caps its torch threads (``OMP_NUM_THREADS``), as the project's
    runs beside it are capped."""
    checkout = Path(checkout)
    if not (checkout / "run.py").is_file():
        raise SystemExit(f"{checkout} is not a checkout of the reference GRU4Rec (no run.py)")
    with tempfile.TemporaryDirectory(prefix="gru4rec-ref-") as tmp:
        train_path = write_tsv(in_training_order(train), Path(tmp) / "train.tsv")
        test_path = write_tsv(test, Path(tmp) / "test.tsv")
        started = time.perf_counter()
        out = subprocess.run([python, "run.py", str(train_path), "-ps", parameter_string(params),
                              "-t", str(test_path), "-m", "20", "10", "-e", "conservative", "-d", device],
                             cwd=checkout, capture_output=True, text=True,
                             env={**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})})
        if out.returncode != 0:
            raise RuntimeError(f"the reference failed ({out.returncode}): {out.stderr[-2000:]}")
    text = out.stdout
    result = {"wall_seconds": time.perf_counter() - started}
    for cut, recall, mrr in re.findall(r"Recall@(\d+): ([\d.]+) MRR@\d+: ([\d.]+)", text):
        result[f"recall@{cut}"], result[f"mrr@{cut}"] = float(recall), float(mrr)
    epochs = [float(s) for s in re.findall(r"Epoch\s*\d+\s*-->.*?\(([\d.]+)s\)", text)]
    if epochs:
        result["seconds_per_epoch_mean"] = sum(epochs) / len(epochs)
    if "recall@20" not in result:
        raise RuntimeError(f"no figures in the reference's output: {text[-2000:]}")
    return result
