"""Teacher output cache: exact round trip, hits skip the teacher, keys, and a cached run equals an uncached one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from schemes_helpers import run_stages
from torch import nn

from edgekd.data import Normalization
from edgekd.distill.cache import CachedTeacher, Store, cache_key


class CountingTeacher(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, classes)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(x)


def test_store_exact_with_all_classes_and_tail_mass_with_top_k():
    torch.manual_seed(0)
    z = torch.randn(6, 10) * 3
    full = Store(6, 10, top_k=32, dtype="float32")
    full.put(np.arange(6), z)
    assert torch.equal(full.get(np.arange(6), "cpu"), z)
    top = Store(6, 10, top_k=3, dtype="float32")
    top.put(np.arange(6), z)
    got = top.get(np.arange(6), "cpu")
    k3 = z.topk(3, 1)
    assert torch.equal(got.gather(1, k3.indices), k3.values)  # the top-k logits are exact
    assert torch.allclose(torch.logsumexp(got, 1), torch.logsumexp(z, 1), atol=1e-5)  # the tail's mass at T=1 kept
    half = Store(6, 10, top_k=32, dtype="float16")
    half.put(np.arange(6), z)
    assert torch.allclose(half.get(np.arange(6), "cpu"), z, atol=1e-2)


def test_hit_gives_identical_logits_and_skips_the_teacher(tmp_path):
    teacher = CountingTeacher()
    x, y = torch.randn(8, 4), torch.zeros(8, dtype=torch.long)

    def make():
        return CachedTeacher(teacher, directory=tmp_path, key_of_epoch=lambda e: "k", n_samples=20, num_classes=10)

    cached = make()
    first = cached(x, y, torch.arange(8), 0)
    assert teacher.calls == 1 and cached.misses == 8 and torch.equal(first, teacher.fc(x))
    again = cached(x, y, torch.arange(8), 1)
    assert teacher.calls == 1 and cached.hits == 8 and torch.equal(again, first)
    cached.end_epoch(1)
    other_run = make()  # a later run reads the store from disk
    assert torch.equal(other_run(x, y, torch.arange(8), 0), first) and teacher.calls == 1 and other_run.misses == 0
    other_run(x[:4], y[:4], torch.tensor([3, 9, 10, 11]), 0)  # a batch with unseen samples runs the teacher
    assert teacher.calls == 2 and other_run.misses == 4


def test_key_ignores_the_epoch_only_without_augmentation():
    norm = Normalization(mean=[0.5], std=[0.2])
    common = {"teacher_sha256": "a" * 64, "data_fingerprint": "b" * 64, "normalization": norm, "seed": 0}
    off = {"random_crop": False, "padding": 1, "hflip": False}
    on = {"random_crop": True, "padding": 1, "hflip": False}
    assert cache_key(**common, augment=off, epoch=0) == cache_key(**common, augment=off, epoch=5)
    assert cache_key(**common, augment=on, epoch=0) != cache_key(**common, augment=on, epoch=1)
    assert cache_key(**common, augment=on, epoch=0) != cache_key(**{**common, "seed": 1}, augment=on, epoch=0)
    assert cache_key(**common, augment=off, epoch=0) != cache_key(
        **{**common, "teacher_sha256": "c" * 64}, augment=off, epoch=0
    )


@pytest.mark.parametrize("augment", [False, True])
def test_cached_runs_match_the_uncached_run(tmp_path, digits_teacher, augment):
    settings = {
        "distill.guard.mode": "off",
        "distill.epochs": 3,
        "data.augment.random_crop": augment,
        "distill.cache.dir": str(tmp_path / "cache"),
    }
    plain = run_stages(tmp_path / "plain", digits_teacher, settings)
    first = run_stages(tmp_path / "first", digits_teacher, {**settings, "distill.cache.enabled": True})
    second = run_stages(tmp_path / "second", digits_teacher, {**settings, "distill.cache.enabled": True})
    assert first["val_top1"] == plain["val_top1"] and second["val_top1"] == plain["val_top1"]
    assert second["cache"]["misses"] == 0 and second["cache"]["hits"] > 0  # the teacher never ran
    if augment:
        assert first["cache"]["hits"] == 0  # every epoch's crops differ: nothing to reuse within a run
    else:
        # Epoch 1 fills the store; epoch 2's batches that hold the samples epoch 1 dropped (drop_last)
        # still run the teacher; epoch 3 hits throughout.
        assert first["cache"]["hits"] >= first["cache"]["misses"] // 2 > 0
    assert math.isclose(
        sum(first["history"][-1]["train_loss"].values()), sum(plain["history"][-1]["train_loss"].values()), rel_tol=1e-6
    )
    assert len(list((tmp_path / "cache").glob("*.npz"))) == (3 if augment else 1)


def test_cache_refused_for_a_scheme_that_changes_the_teacher_input(tmp_path, digits_teacher):
    m = run_stages(
        tmp_path / "run",
        digits_teacher,
        {
            "distill.guard.mode": "off",
            "distill.scheme": "cross_modal",
            "distill.cache.enabled": True,
            "distill.cache.dir": str(tmp_path / "c"),
            "distill.cross_modal.student_view": "lowres:4",
        },
    )
    assert "cache" not in m and not (tmp_path / "c").exists()
