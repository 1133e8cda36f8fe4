"""Loading session data: the GRU4Rec TSV format and the Diginetica table in ``../shared/data``.

Both loaders return a frame with columns ``SessionId``, ``ItemId`` (string ids, as on the wire)
and ``Time``, sorted by session and then time, the order GRU4Rec trains and evaluates in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["SessionId", "ItemId", "Time"]


def load_tsv(path: str | Path) -> pd.DataFrame:
    """GRU4Rec's input format: TSV with header ``SessionId<TAB>ItemId<TAB>Time`` (unix seconds)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"session data file {path} does not exist")
    df = pd.read_csv(path, sep="\t", dtype={"SessionId": "int64", "ItemId": "str", "Time": "float64"})
    missing = set(COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}; expected header {COLUMNS}")
    return df[COLUMNS].sort_values(["SessionId", "Time"], kind="mergesort").reset_index(drop=True)


def load_diginetica(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``diginetica/sessions.tsv.gz`` -> (train, test).

    The table has no timestamps: sessions are ordered by ``SessionId`` (train sessions are
    date-sorted), clicks by ``Pos``; ``Time`` is set to ``Pos`` so the usual sort applies.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Diginetica table {path} does not exist")
    df = pd.read_csv(path, sep="\t", usecols=["SessionId", "ItemId", "Pos", "Split"],
                     dtype={"SessionId": "int64", "ItemId": "str", "Pos": "int64", "Split": "str"})
    df = df.rename(columns={"Pos": "Time"}).sort_values(["SessionId", "Time"], kind="mergesort")
    df["Time"] = df["Time"].astype("float64")
    train = df[df["Split"] == "train"][COLUMNS].reset_index(drop=True)
    test = df[df["Split"] == "test"][COLUMNS].reset_index(drop=True)
    return train, test


def restrict_to_items(test: pd.DataFrame, items: pd.Index | np.ndarray, min_length: int = 2) -> pd.DataFrame:
    """Drop test clicks on items unseen in training, then sessions left shorter than ``min_length``.

    This is the reference protocol: the model cannot rank an item it has no embedding for.
    """
    test = test[test["ItemId"].isin(items)]
    lengths = test.groupby("SessionId")["ItemId"].transform("size")
    return test[lengths >= min_length].reset_index(drop=True)


def load_dataset(name: str, data_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) for a dataset name in ``data_dir`` (``../shared/data``): ``yoochoose-100k``, ``diginetica``."""
    data_dir = Path(data_dir)
    if name == "yoochoose-100k":
        folder = data_dir / "yoochoose-100k"
        train = next(folder.glob("*_train_full.txt"), None)
        test = next(folder.glob("*_test.txt"), None)
        if train is None or test is None:
            raise FileNotFoundError(f"{folder} lacks *_train_full.txt / *_test.txt")
        return load_tsv(train), load_tsv(test)
    if name == "diginetica":
        return load_diginetica(data_dir / "diginetica" / "sessions.tsv.gz")
    raise ValueError(f"unknown dataset {name!r}: use 'yoochoose-100k' or 'diginetica'")
