"""IndexedAdagradM follows Adagrad with momentum row by row, for sparse (indexed) and dense gradients."""

import numpy as np
import pytest
import torch

from models.optim import IndexedAdagradM


def _formula(w, grads, lr, momentum, eps=1e-6):
    """The documented update, step by step in float64 numpy: acc += g^2; mom = m*mom - lr*g/sqrt(acc+eps); w += mom."""
    w = w.astype(np.float64).copy()
    acc, mom = np.zeros_like(w), np.zeros_like(w)
    for g in grads:
        touched = np.any(g != 0, axis=tuple(range(1, g.ndim))) if g.ndim > 1 else g != 0
        acc[touched] += g[touched] ** 2
        step = -lr * g[touched] / np.sqrt(acc[touched] + eps)
        mom[touched] = momentum * mom[touched] + step if momentum > 0 else step
        w[touched] += mom[touched]
    return w, acc


@pytest.mark.parametrize("momentum", [0.0, 0.3])
def test_sparse_rows_with_repeated_items_follow_the_formula_and_untouched_rows_stay(momentum):
    torch.manual_seed(0)
    table = torch.nn.Embedding(50, 8, sparse=True)
    start = table.weight.detach().numpy().copy()
    opt = IndexedAdagradM(table.parameters(), lr=0.2, momentum=momentum)
    grads = []
    for _ in range(6):
        items = torch.randint(0, 20, (30,))  # repeats within a step, rows 20..49 never touched
        table.zero_grad(set_to_none=True)
        (table(items) * torch.randn(30, 8)).sum().backward()
        grads.append(table.weight.grad.to_dense().numpy().copy())
        opt.step()
    expected, acc = _formula(start, grads, lr=0.2, momentum=momentum)
    np.testing.assert_allclose(table.weight.detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(opt.state[table.weight]["acc"].numpy(), acc, rtol=1e-5, atol=1e-7)
    assert np.array_equal(table.weight.detach().numpy()[20:], start[20:])


@pytest.mark.parametrize("momentum", [0.0, 0.15])
def test_dense_parameters_follow_the_same_formula(momentum):
    torch.manual_seed(1)
    w = torch.nn.Parameter(torch.randn(6, 5))
    start = w.detach().numpy().copy()
    opt = IndexedAdagradM([w], lr=0.05, momentum=momentum)
    grads = []
    for _ in range(5):
        w.grad = torch.randn(6, 5)
        grads.append(w.grad.numpy().copy())
        opt.step()
    expected, _ = _formula(start, grads, lr=0.05, momentum=momentum)
    np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_a_column_vector_table_like_the_item_biases_is_updated_too():
    bias = torch.nn.Embedding(10, 1, sparse=True)
    torch.nn.init.zeros_(bias.weight)
    opt = IndexedAdagradM(bias.parameters(), lr=0.1, momentum=0.2)
    bias(torch.tensor([3, 3, 7])).sum().backward()
    opt.step()
    w = bias.weight.detach().ravel().numpy()
    assert w[3] == pytest.approx(-0.1 * 2 / np.sqrt(4 + 1e-6), rel=1e-6)
    assert w[7] == pytest.approx(-0.1, rel=1e-5)
    assert np.count_nonzero(w) == 2
