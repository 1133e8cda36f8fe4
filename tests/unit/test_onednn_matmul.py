"""Training's float32 products on oneDNN: the probe tells float32 from bfloat16, and training learns the same."""

from __future__ import annotations

import pytest
import torch

from models.gru4rec import GRU4Rec, GRU4RecParams
from models.onednn_matmul import MAX_RELATIVE_ERROR, onednn_float32_matmul, onednn_keeps_float32, relative_error
from tests.unit.test_gru4rec import cyclic_sessions


def test_the_probe_threshold_passes_float32_products_and_rejects_bfloat16_operands():
    generator = torch.Generator().manual_seed(1)
    a, b = torch.randn(128, 512, generator=generator), torch.randn(512, 1536, generator=generator)
    exact = a.double() @ b.double()
    assert relative_error(a @ b, exact) < MAX_RELATIVE_ERROR / 10
    rounded = a.bfloat16().float() @ b.bfloat16().float()  # what oneDNN's bfloat16 kernels multiply
    assert relative_error(rounded, exact) > MAX_RELATIVE_ERROR * 10


def test_the_context_restores_torchs_setting_even_when_the_block_raises():
    before = torch.backends.mkldnn.matmul.fp32_precision
    with pytest.raises(RuntimeError):
        with onednn_float32_matmul() as used:
            assert used == onednn_keeps_float32()
            raise RuntimeError("boom")
    assert torch.backends.mkldnn.matmul.fp32_precision == before
    with onednn_float32_matmul(enabled=False) as used:
        assert used is False
        assert torch.backends.mkldnn.matmul.fp32_precision == before


def test_training_on_onednn_products_learns_what_training_on_mkl_learns():
    """Same seed, same data: losses and weights agree to float32 accumulation order (rtol 1e-4 after 3 epochs)."""
    clicks = cyclic_sessions(n_sessions=200, n_items=40)
    params = GRU4RecParams(layers=[128], loss="bpr-max", batch_size=32, n_sample=64, n_epochs=3,
                           learning_rate=0.05, momentum=0.1, dropout_p_embed=0.2, dropout_p_hidden=0.1,
                           elu_param=1.0, bpreg=0.5, seed=7)
    before = torch.backends.mkldnn.matmul.fp32_precision
    onednn = GRU4Rec(params, device="cpu", onednn_matmul=True).fit(clicks)
    mkl = GRU4Rec(params, device="cpu", onednn_matmul=False).fit(clicks)
    assert onednn.loss_history == pytest.approx(mkl.loss_history, rel=1e-5)
    for (name, a), b in zip(onednn.model.state_dict().items(), mkl.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
    assert torch.backends.mkldnn.matmul.fp32_precision == before  # fit leaves torch's setting as it found it
    if onednn_keeps_float32():  # the products did run on another kernel: the sums came out in another order
        assert any(not torch.equal(a, b) for a, b in zip(onednn.model.state_dict().values(),
                                                         mkl.model.state_dict().values()))
