"""What keeping Adagrad's accumulators does to a warm-start retrain (GRU4Rec on yoochoose-100k).

    python -m bench.warm_start

Trains a small GRU4Rec (48 units, 2 epochs) on yoochoose-100k, then warm-starts copies of it on the
last 3,000 training sessions for 2 epochs -- as a major retrain does on a recent window -- with the
accumulators kept (what ``GRU4Rec.save`` now stores) or reset, at two learning rates, and prints
Recall@20 on the test split before and after each.
"""

from __future__ import annotations

import io
import json
import sys

from bench.common import DATA
from models.data import load_dataset
from models.evaluate import evaluate
from models.gru4rec import GRU4Rec, GRU4RecParams


def main() -> int:
    train, test = load_dataset("yoochoose-100k", DATA)
    gru = GRU4Rec(GRU4RecParams(layers=[48], n_epochs=2, n_sample=256, batch_size=64, learning_rate=0.1, seed=1),
                  device="cpu").fit(train)
    blob = io.BytesIO()
    gru.save(blob)
    window = train[train.SessionId.isin(train.SessionId.unique()[-3000:])]
    result = {"benchmark": "warm_start", "recall@20_before": evaluate(gru, test, cutoffs=(20,))["recall@20"],
              "after": [], "command": "python -m bench.warm_start"}
    for keep in (False, True):
        for lr in (0.1, 0.02):
            blob.seek(0)
            warm = GRU4Rec.load(blob, device="cpu")
            if not keep:
                warm.accumulators = {}
            warm.params.n_epochs, warm.params.learning_rate = 2, lr
            warm.fit(window, warm_start=True)
            result["after"].append({"accumulators": "kept" if keep else "reset", "learning_rate": lr,
                                    "recall@20": evaluate(warm, test, cutoffs=(20,))["recall@20"]})
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
