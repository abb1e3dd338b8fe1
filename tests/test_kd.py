"""Hinton KD matches its formula and the reference implementations' conventions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from edgekd.distill import functional as EF
from edgekd.distill.methods import build_method, method_names
from edgekd.errors import EdgekdError


def test_kd_matches_formula():
    torch.manual_seed(0)
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    T = 4.0
    p_t = F.softmax(t / T, 1)
    manual = (p_t * (p_t.log() - F.log_softmax(s / T, 1))).sum(1).mean() * T * T
    assert torch.allclose(EF.kd(s, t, T), manual, atol=1e-6)
    # RepDistiller's DistillKL: kl_div(log p_s, p_t, size_average=False) * T^2 / B
    rep = F.kl_div(F.log_softmax(s / T, 1), p_t, reduction="sum") * T**2 / s.shape[0]
    assert torch.allclose(EF.kd(s, t, T), rep, atol=1e-6)


def test_kd_zero_for_identical_logits_and_positive_otherwise():
    x = torch.randn(4, 5)
    assert EF.kd(x, x).abs().item() < 1e-6
    assert EF.kd(x, x.flip(1)).item() > 0


def test_kd_shape_mismatch():
    with pytest.raises(ValueError, match="differ"):
        EF.kd(torch.randn(2, 3), torch.randn(2, 4))


def test_method_registry():
    assert "kd" in method_names()
    method = build_method("kd", {"T": 2.0})
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    terms = method({"logits": s}, {"logits": t}, torch.zeros(3, dtype=torch.long), 0)
    assert set(terms) == {"kd"} and torch.allclose(terms["kd"], EF.kd(s, t, 2.0))
    with pytest.raises(EdgekdError, match="unknown distillation method"):
        build_method("nope")
    with pytest.raises(EdgekdError, match="bad parameters"):
        build_method("kd", {"temperature": 3})
