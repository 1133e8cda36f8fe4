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


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("momentum", [0.0, 0.3])
def test_sparse_rows_with_repeated_items_follow_the_formula_and_untouched_rows_stay(momentum, compiled):
    torch.manual_seed(0)
    table = torch.nn.Embedding(50, 8, sparse=True)
    start = table.weight.detach().numpy().copy()
    opt = IndexedAdagradM(table.parameters(), lr=0.2, momentum=momentum, compiled=compiled)
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


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("momentum", [0.0, 0.15])
def test_dense_parameters_follow_the_same_formula(momentum, compiled):
    torch.manual_seed(1)
    w = torch.nn.Parameter(torch.randn(6, 5))
    start = w.detach().numpy().copy()
    opt = IndexedAdagradM([w], lr=0.05, momentum=momentum, compiled=compiled)
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


@pytest.mark.parametrize("momentum", [0.0, 0.15])
def test_the_compiled_update_equals_the_torch_update_within_one_rounding(momentum):
    """models.adagrad_kernels against the torch formulas on float32 item rows, a bias column and a dense matrix.

    Accumulators and dense updates come out bit for bit; a few row updates differ by one float32 rounding of the
    update term (numba compiles for the host CPU, which may fuse or order the arithmetic differently: 2 elements of
    4,800 on one machine, 5-6 on another, up to 7.5e-9 absolute).  The update term is under 0.125 here (lr 0.05,
    a step of at most lr * (1 + momentum)), whose last place is 7.5e-9: hence atol 1.5e-8 (two units of it)
    beside rtol 3e-7 (two units of the result's)."""
    torch.manual_seed(2)
    start = [torch.randn(300, 16), torch.zeros(300, 1), torch.randn(24, 7)]
    runs = []
    for compiled in (True, False):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = IndexedAdagradM(params, lr=0.05, momentum=momentum, compiled=compiled)
        gen = torch.Generator().manual_seed(5)
        for _ in range(4):
            rows = torch.randperm(300, generator=gen)[:40].sort().values
            for table in params[:2]:
                values = torch.randn(40, table.shape[1], generator=gen)
                table.grad = torch.sparse_coo_tensor(rows[None], values, table.shape).coalesce()
            params[2].grad = torch.randn(24, 7, generator=gen)
            opt.step()
        runs.append([p.detach().clone() for p in params] + [opt.state[p]["acc"].clone() for p in params])
    for mine, theirs in zip(*runs):
        torch.testing.assert_close(mine, theirs, rtol=3e-7, atol=1.5e-8)
    assert not torch.equal(runs[0][0], start[0])  # the rows did move
