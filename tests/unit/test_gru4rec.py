"""GRU4Rec on tiny data: learning, the step API against an independent GRU, sampling, persistence."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from models.evaluate import NaNModelError, evaluate
from models.gru4rec import GRU4Rec, GRU4RecParams
from models.sampling import SampleCache


def cyclic_sessions(n_sessions=300, n_items=30, length=6, seed=0) -> pd.DataFrame:
    """Sessions that walk item i -> i+1 (mod n): a transition a session model must learn."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_sessions):
        start = rng.integers(n_items)
        for t in range(length):
            rows.append((s, str((start + t) % n_items), float(s * 100 + t)))
    return pd.DataFrame(rows, columns=["SessionId", "ItemId", "Time"])


def small(loss="cross-entropy", **kw) -> GRU4RecParams:
    base = dict(layers=[32], loss=loss, batch_size=16, n_sample=16, n_epochs=6, learning_rate=0.1,
                sample_alpha=0.5, logq=1.0 if loss == "cross-entropy" else 0.0, elu_param=1.0, bpreg=0.1, seed=3)
    base.update(kw)
    return GRU4RecParams(**base)


@pytest.mark.parametrize("loss, factor", [("cross-entropy", 0.9), ("bpr-max", 0.9),
                                          ("top1-max", 0.97)])  # TOP1-max's sigmoid(score^2) term keeps it high
def test_loss_falls_over_epochs_and_the_transitions_are_learned(loss, factor):
    gru = GRU4Rec(small(loss), device="cpu").fit(cyclic_sessions())
    assert len(gru.loss_history) == 6
    assert gru.loss_history[-1] < gru.loss_history[0] * factor, gru.loss_history
    assert evaluate(gru, cyclic_sessions(n_sessions=50, seed=1))["recall@5"] > 0.8


def test_learned_transitions_rank_first():
    data = cyclic_sessions()
    gru = GRU4Rec(small(n_epochs=10), device="cpu").fit(data)
    result = evaluate(gru, cyclic_sessions(n_sessions=50, seed=1))
    assert result["recall@5"] > 0.9 and result["mrr@20"] > 0.6, result


@pytest.mark.parametrize("layers, constrained, embedding", [([24], True, 0), ([24, 24], True, 0), ([24], False, 12),
                                                           ([24], False, 0)])
def test_step_by_step_equals_full_sequence_and_an_independent_gru(layers, constrained, embedding):
    gru = GRU4Rec(small(layers=layers, constrained_embedding=constrained, embedding=embedding, n_epochs=2),
                  device="cpu").fit(cyclic_sessions())
    items = torch.tensor([[0, 1, 2, 3, 4], [7, 3, 9, 9, 1]])
    states, scores = gru.forward_sequence(items)

    hidden = gru.init_hidden(2)
    for t in range(items.shape[1]):
        hidden, s = gru.step(hidden, items[:, t])
        torch.testing.assert_close(hidden, states[t])
        torch.testing.assert_close(s, scores[t])

    m = gru.model
    if m.onehot is None:  # the GRU layers as torch's own multi-layer nn.GRU over the whole sequence
        x = m.Wy(items) if constrained else m.E(items)
        ref = torch.nn.GRU(x.shape[-1], layers[0], num_layers=len(layers), batch_first=True)
        with torch.no_grad():
            for i, cell in enumerate(m.cells):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(ref, f"{name}_l{i}").copy_(getattr(cell, name))
            out, _ = ref(x)
            ref_scores = out @ m.Wy.weight.T + m.By.weight.T
        torch.testing.assert_close(scores.transpose(0, 1), ref_scores, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("layers, constrained, embedding", [([24], True, 0), ([24, 24], True, 0), ([24], False, 12),
                                                           ([24], False, 0)])
def test_batched_encode_equals_stepping_each_session_alone(layers, constrained, embedding):
    """What a promotion's rebuild of stored sessions computes: sessions of different lengths, unknown items
    (-1) and an empty session, encoded together, give each session's own step-by-step state."""
    gru = GRU4Rec(small(layers=layers, embedding=embedding, constrained_embedding=constrained, n_epochs=1),
                  device="cpu").fit(cyclic_sessions())
    sessions = [[0, 1, 2, 3, 4], [7], [], [5, -1, 9], [-1], [3, 3, 3, 3, 3, 3, 3, 1]]
    batched = gru.encode([torch.tensor(s, dtype=torch.long) for s in sessions])
    assert batched.shape == (len(layers), len(sessions), layers[-1])
    for b, items in enumerate(sessions):
        h = gru.init_hidden(1)
        for item in items:
            h, _ = gru.step(h, torch.tensor([item]), score=False)
        torch.testing.assert_close(batched[:, b], h[:, 0], atol=1e-5, rtol=1e-5)
    assert not batched[:, 2].any()  # an empty session stays at the zero state


def test_training_forward_in_eval_mode_is_the_step_computation():
    gru = GRU4Rec(small(n_epochs=1, dropout_p_hidden=0.5, dropout_p_embed=0.3), device="cpu").fit(cyclic_sessions())
    hidden = gru.init_hidden(3)
    items, targets = torch.tensor([1, 2, 3]), torch.tensor([2, 3, 4, 10, 11])
    _, step_scores = gru.step(hidden, items)
    layers = list(gru.init_hidden(3).unbind(0))
    out = gru.model.hidden_step(items, layers, training=False)
    torch.testing.assert_close(gru.model.score(out, targets), step_scores[:, targets])


def test_sampler_frequencies_follow_popularity_to_the_alpha():
    torch.manual_seed(0)
    pop = np.array([1, 4, 9, 16, 100, 0], dtype=float)
    for alpha in (0.0, 0.5, 1.0):
        cache = SampleCache(pop, n_sample=1000, alpha=alpha, max_size=50_000)
        draws = torch.cat([cache.get_sample() for _ in range(200)]).numpy()
        freq = np.bincount(draws, minlength=len(pop)) / len(draws)
        weights = np.ones_like(pop) if alpha == 0 else pop**alpha
        expected = weights / weights.sum()
        np.testing.assert_allclose(freq, expected, atol=0.006)
        if alpha > 0:
            assert freq[-1] == 0.0  # an item never clicked is never sampled


def test_save_load_round_trip(tmp_path):
    gru = GRU4Rec(small(n_epochs=1), device="cpu").fit(cyclic_sessions())
    gru.save(tmp_path / "m.pt")
    again = GRU4Rec.load(tmp_path / "m.pt", device="cpu")
    items = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(again.forward_sequence(items)[1], gru.forward_sequence(items)[1])
    assert list(again.item_ids) == list(gru.item_ids) and again.params == gru.params
    emb, bias, ids = again.item_embeddings()
    assert emb.dtype == np.float32 and emb.shape == (30, 32) and bias.shape == (30,) and len(ids) == 30


def test_item_ids_are_saved_as_one_tensor_and_the_older_list_still_loads(tmp_path):
    """The ids travel as one uint8 tensor (the weights-only unpickler reads a list of strings op by op in Python);
    a model saved with the plain list, as before, loads the same."""
    gru = GRU4Rec(small(n_epochs=1), device="cpu").fit(cyclic_sessions())
    gru.save(tmp_path / "m.pt")
    blob = torch.load(tmp_path / "m.pt", weights_only=True)
    assert "item_ids" not in blob and blob["item_ids_json"].dtype == torch.uint8
    blob["item_ids"] = list(map(str, gru.item_ids))  # the format before
    del blob["item_ids_json"]
    torch.save(blob, tmp_path / "old.pt")
    old, new = GRU4Rec.load(tmp_path / "old.pt"), GRU4Rec.load(tmp_path / "m.pt")
    assert list(old.item_ids) == list(new.item_ids) == list(map(str, gru.item_ids))
    assert new.item_embeddings()[2] == list(map(str, gru.item_ids))


def test_unknown_items_map_to_minus_one_and_warm_start_adds_rows():
    gru = GRU4Rec(small(n_epochs=1), device="cpu").fit(cyclic_sessions())
    assert gru.item_indices(["0", "nope"]).tolist()[1] == -1
    before = gru.model.Wy.weight[: gru.n_items].detach().clone()
    new = pd.DataFrame({"SessionId": [1, 1, 1], "ItemId": ["new1", "new2", "0"], "Time": [0.0, 1.0, 2.0]})
    gru.params.n_epochs = 0
    gru.fit(new, warm_start=True)
    assert gru.n_items == 32 and gru.item_indices(["new1", "new2"]).tolist() == [30, 31]
    torch.testing.assert_close(gru.model.Wy.weight[:30], before)


def test_adagrad_accumulators_survive_save_load_and_carry_into_a_warm_start():
    import io

    gru = GRU4Rec(small(n_epochs=2), device="cpu").fit(cyclic_sessions())
    saved = gru.accumulators["Wy.weight"].clone()
    assert saved.shape == gru.model.Wy.weight.shape and saved.sum() > 0
    buf = io.BytesIO()
    gru.save(buf)
    buf.seek(0)
    again = GRU4Rec.load(buf, device="cpu")
    torch.testing.assert_close(again.accumulators["Wy.weight"], saved)
    new = pd.DataFrame({"SessionId": [1, 1, 1], "ItemId": ["new1", "0", "1"], "Time": [0.0, 1.0, 2.0]})
    again.params.n_epochs = 1
    again.fit(pd.concat([cyclic_sessions(n_sessions=20), new.assign(SessionId=999)]), warm_start=True)
    after = again.accumulators["Wy.weight"]
    assert after.shape[0] == 31
    assert (after[:30] >= saved).all() and (after[:30] > saved).any()  # continued, never reset
    assert 0 < after[30].sum() < saved.sum(axis=1).max() * 10  # the new item's row started from zero


def test_nan_loss_blocks_evaluation():
    gru = GRU4Rec(small(n_epochs=1), device="cpu").fit(cyclic_sessions())
    gru.loss_history.append(math.nan)
    with pytest.raises(NaNModelError):
        evaluate(gru, cyclic_sessions(n_sessions=5))


def test_training_stops_when_the_loss_goes_nan(monkeypatch):
    gru = GRU4Rec(small(n_epochs=4), device="cpu")
    calls = {"n": 0}
    real = GRU4Rec._xe_loss

    def poisoned(self, scores, targets, n_valid):  # the loss turns NaN during the second epoch
        calls["n"] += 1
        loss = real(self, scores, targets, n_valid)
        return loss * float("nan") if calls["n"] > 150 else loss

    monkeypatch.setattr(GRU4Rec, "_xe_loss", poisoned)
    gru.fit(cyclic_sessions())
    assert gru.trained_with_nan and len(gru.loss_history) == 2, gru.loss_history
    with pytest.raises(NaNModelError):
        evaluate(gru, cyclic_sessions(n_sessions=5))


def test_evaluation_can_score_only_flagged_targets_while_every_click_feeds_the_state():
    gru = GRU4Rec(small(n_epochs=10), device="cpu").fit(cyclic_sessions())
    test = cyclic_sessions(n_sessions=40, seed=1)
    test["flag"] = (test.groupby("SessionId").cumcount() % 2 == 1)  # targets at positions 1, 3, 5 count
    everything = evaluate(gru, test)
    flagged = evaluate(gru, test, target_column="flag")
    assert everything["events"] == 40 * 5 and flagged["events"] == 40 * 3
    # the unflagged clicks still moved the state: i -> i+1 is predicted (dropping them would break the walk)
    assert flagged["recall@5"] > 0.9, flagged


@pytest.mark.parametrize("loss", ["bpr-max", "top1-max"])
def test_the_fused_negative_softmax_gives_the_reference_formulas_loss_and_gradient(loss, monkeypatch):
    """The reference's softmax over negatives: zero the diagonal, subtract the row max, mask after exp."""
    def reference_softmax_neg(x):
        mask = 1.0 - torch.eye(x.shape[0], x.shape[1], dtype=x.dtype)
        e = torch.exp(x * mask - (x * mask).max(dim=1, keepdim=True).values) * mask
        return e / e.sum(dim=1, keepdim=True)

    gru = GRU4Rec(GRU4RecParams(loss=loss, elu_param=1.0, bpreg=0.9))
    torch.manual_seed(3)
    raw = torch.randn(16, 16 + 40, dtype=torch.float64) * 2
    mine = raw.clone().requires_grad_()
    value = gru._loss_fn()(mine, None, 16)
    value.backward()
    ref = raw.clone().requires_grad_()
    fused = GRU4Rec._softmax_neg
    monkeypatch.setattr(GRU4Rec, "_softmax_neg", staticmethod(reference_softmax_neg))
    expected = gru._loss_fn()(ref, None, 16)
    expected.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(mine.grad, ref.grad, rtol=1e-6, atol=1e-9)
    weights = fused(raw)
    assert torch.all(weights.diagonal() == 0) and torch.allclose(weights.sum(1), torch.ones(16, dtype=raw.dtype))


@pytest.mark.parametrize("constrained, embedding, layers", [(True, 0, [12]), (False, 8, [12]), (False, 0, [12, 12])])
def test_a_step_on_gathered_item_rows_equals_the_step_through_the_embedding_tables(constrained, embedding, layers):
    """training_scores + attach_row_grads against hidden_step + score: the same scores, loss and updated weights.

    The targets repeat items (sampled negatives do) and share items with the inputs, the case where the
    gathered rows' summed gradients differ from the per-lookup ones in order of addition only; items that
    were targets in the first step are only inputs in the second, where their bias must not move (a zero
    gradient would still apply the bias row's momentum).
    Tolerance: 1e-6 relative in float64 (two steps of Adagrad with momentum, dropout on).
    """
    from models.gru4rec import GRU4RecModel
    from models.optim import IndexedAdagradM

    gru = GRU4Rec(GRU4RecParams(loss="bpr-max", elu_param=1.0, bpreg=0.9))
    torch.manual_seed(0)
    model = GRU4RecModel(40, layers, 0.5, 0.3, embedding, constrained).double().train()
    twin = GRU4RecModel(40, layers, 0.5, 0.3, embedding, constrained).double().train()
    twin.load_state_dict(model.state_dict())
    initial = {name: t.clone() for name, t in model.state_dict().items()}
    steps = [(torch.tensor([3, 7, 7, 11, 0, 19]),
              torch.tensor([7, 11, 3, 5, 39, 7] + [3, 3, 21, 7, 5, 33, 33, 0])),
             (torch.tensor([5, 39, 7, 2, 2, 19]),  # 5 and 39: targets before, only inputs now
              torch.tensor([2, 7, 19, 21, 0, 8] + [8, 1, 1, 30, 7, 0, 12, 12]))]
    start = [torch.randn(6, size, dtype=torch.float64) for size in layers]
    results = []
    for net, gathered in ((model, False), (twin, True)):
        optimizer = IndexedAdagradM(net.parameters(), lr=0.1, momentum=0.3)
        for items, targets in steps:  # the second step sees accumulators and momenta the first one left
            hidden = [h.clone() for h in start]
            net.seed_dropout(1)  # the same masks on both paths
            net.zero_grad(set_to_none=True)
            if gathered:
                scores, touched = net.training_scores(items, hidden, targets)
            else:
                scores = net.score(net.hidden_step(items, hidden, training=True), targets)
            loss = gru._loss_fn()(scores, targets, 6)
            loss.backward()
            if gathered:
                net.attach_row_grads(touched)
            optimizer.step()
        results.append((scores.detach(), loss.item(), hidden, net.state_dict()))
    (scores_a, loss_a, hidden_a, state_a), (scores_b, loss_b, hidden_b, state_b) = results
    torch.testing.assert_close(scores_b, scores_a, rtol=1e-6, atol=1e-9)
    assert loss_b == pytest.approx(loss_a, rel=1e-6)
    for h_a, h_b in zip(hidden_a, hidden_b):
        torch.testing.assert_close(h_b.detach(), h_a.detach(), rtol=1e-6, atol=1e-9)
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        torch.testing.assert_close(state_b[name], state_a[name], rtol=1e-6, atol=1e-9, msg=name)
    touched = torch.zeros(40, dtype=torch.bool)
    for items, targets in steps:
        touched[torch.cat([items, targets]) if constrained else targets] = True
    moved = (state_b["Wy.weight"] != initial["Wy.weight"]).any(dim=1)
    assert torch.equal(moved, touched)  # the step moved exactly the rows it read
