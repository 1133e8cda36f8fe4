"""Float32 matrix products through oneDNN's AVX-512 kernels during training, where they stay float32.

Why: torch sends a CPU float32 product to MKL's ``sgemm``.  On this project's machines (AMD EPYC with
AVX-512) that reaches ~180 GFLOPS on two cores, while oneDNN's ``brg_matmul:avx512_core`` kernel, for the same
float32 operands and a float32 result, reaches ~225: the GRU4Rec step's seven products (~1.9 GFLOP) are half
its time, and the step is 5-10% shorter (``python -m bench.gru4rec_profile --matmul both``: 0.90-0.95 of
MKL's step time in four alternating pairs).

torch routes float32 products to oneDNN only when oneDNN is allowed a lower internal precision
(``torch.backends.mkldnn.matmul.fp32_precision = "bf16"``, as ``torch.set_float32_matmul_precision("medium")``
sets it).  That is a permission, not an order: oneDNN uses bfloat16 only where it has a bfloat16 kernel for the
problem (AMX, for instance); elsewhere it runs its float32 kernel.  So :func:`onednn_float32_matmul` first
measures what the permission does on this machine: products of the training step's shapes under it must equal
float64 products to float32 rounding (a relative error under ``MAX_RELATIVE_ERROR``; bfloat16 operands give
~1e-3).  Where they do not, the context leaves torch as it was, and training keeps MKL.  The probe runs once per
process.  torch's setting is process-wide while the block runs; training runs in a process of its own (the
retrain job is a subprocess of the trainer), so no ranking thread shares it.

Examples
--------
>>> import torch
>>> a, b = torch.randn(64, 256, generator=torch.Generator().manual_seed(0)), torch.ones(256, 32)
>>> before = torch.backends.mkldnn.matmul.fp32_precision
>>> with onednn_float32_matmul():
...     product = a @ b
>>> bool(relative_error(product, a.double() @ b.double()) < MAX_RELATIVE_ERROR)
True
>>> torch.backends.mkldnn.matmul.fp32_precision == before  # restored on leaving
True
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)

#: float32 products of length-512 sums stay near 1e-7 of the operands' scale; bfloat16 operands give ~1e-3
MAX_RELATIVE_ERROR = 1e-5
#: (m, k, n) of the probe products: a GRU4Rec step's forward (batch x hidden x 3 hidden) and a backward
#: product with a transposed operand (sampled rows x batch x hidden)
PROBE_SHAPES = ((128, 512, 1536), (2304, 128, 512))


def relative_error(product: torch.Tensor, exact: torch.Tensor) -> float:
    """Largest error of ``product`` against ``exact``, relative to the largest magnitude in ``exact``."""
    return float((product.double() - exact).abs().max() / exact.abs().max().clamp_min(1e-30))


def _set(precision: str) -> None:
    torch.backends.mkldnn.matmul.fp32_precision = precision


@functools.cache
def onednn_keeps_float32() -> bool:
    """Whether float32 products under the bfloat16 permission equal float64 ones to float32 rounding, here."""
    if not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    before = torch.backends.mkldnn.matmul.fp32_precision
    worst = 0.0
    try:
        _set("bf16")
        for m, k, n in PROBE_SHAPES:
            a = torch.randn(k, m, generator=generator).T  # a transposed operand, as in a backward product
            b = torch.randn(k, n, generator=generator)
            worst = max(worst, relative_error(a @ b, a.double() @ b.double()))
    finally:
        _set(before)
    keeps = worst < MAX_RELATIVE_ERROR
    log.info("oneDNN float32 products: relative error %.2g, %s", worst,
             "used for training" if keeps else "not float32 here, training keeps MKL")
    return keeps


@contextlib.contextmanager
def onednn_float32_matmul(enabled: bool = True) -> Iterator[bool]:
    """Within the block, CPU float32 products run on oneDNN where :func:`onednn_keeps_float32`; yields whether."""
    use = enabled and onednn_keeps_float32()
    before = torch.backends.mkldnn.matmul.fp32_precision
    if use:
        _set("bf16")
    try:
        yield use
    finally:
        _set(before)
