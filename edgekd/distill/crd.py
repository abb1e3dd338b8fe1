"""Contrastive representation distillation (Tian, Krishnan, Isola, ICLR 2020, "Contrastive
Representation Distillation"), as RepDistiller's ``crd/`` (``CRDLoss``, ``ContrastMemory``,
``ContrastLoss``, ``Embed``).

Student and teacher embeddings (the pooled penultimate vectors) go through projection heads
(linear to 128-d, L2-normalised). A memory bank holds one 128-d vector per training sample for
each side. For a batch with dataset indices ``idx``, each sample is contrasted with its own
memory entry (the positive) and K negatives drawn from the bank:

    score(v, m) = exp(v . m / T) / Z          (T = 0.07; Z = mean score x N, fixed on the first batch)
    h(x)        = x / (x + K / N)             (the NCE posterior that x is the positive)
    L_side      = -(1/B) sum_b [ log h(score_pos) + sum_k log(1 - h(score_neg_k)) ]
    crd         = L_student(f_s vs the teacher bank) + L_teacher(f_t vs the student bank)

After each step the positives' memory entries move: m <- normalise(0.5 m + 0.5 v) (momentum 0.5).
Negatives are drawn uniformly from the samples of the other classes (RepDistiller's default
``mode='exact'``), with replacement, from the torch RNG (which the trainer seeds per epoch, so a
resumed run draws the same). The bank and Z live in buffers, so they are saved with the trainer's
checkpoint.

K scales with the dataset (:func:`scaled_k`): the reference draws K = 16384 negatives from
CIFAR-100's N = 50,000 training images, a noise ratio K/N = 0.328. A fixed K of 16384 on a smaller
set would be clipped to N - 1 (9,999 on 10,000 images: K/N = 1.0, a different NCE problem, and
4.5x the reference's cost per step), so by default K = round(0.328 N), which is 16384 at N = 50,000
and 3,277 at N = 10,000. An explicit K is kept as given (clipped to N - 1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgekd.distill.connectors import Embed

EPS = 1e-7  # RepDistiller's eps in ContrastLoss
REFERENCE_K, REFERENCE_N = 16384, 50000  # RepDistiller's nce_k on CIFAR-100's training set


def scaled_k(num_samples: int, k: int | None = None) -> int:
    """Negatives per positive for ``num_samples`` training samples: ``k`` if given, else the
    reference noise ratio kept, K = round(16384 / 50000 * N) (at least 1); clipped to N - 1."""
    if k is None:
        k = max(1, round(REFERENCE_K * num_samples / REFERENCE_N))
    return max(1, min(int(k), num_samples - 1))


def nce_loss(scores: torch.Tensor, num_samples: int) -> torch.Tensor:
    """RepDistiller's ``ContrastLoss``: scores (B, K+1), column 0 the positive."""
    batch, k = scores.shape[0], scores.shape[1] - 1
    noise = k / float(num_samples)  # K * Pn with Pn = 1/N
    log_d1 = torch.log(scores[:, 0] / (scores[:, 0] + noise + EPS))
    log_d0 = torch.log(noise / (scores[:, 1:] + noise + EPS))
    return -(log_d1.sum() + log_d0.sum()) / batch


class ContrastMemory(nn.Module):
    """Two memory banks (student side v1, teacher side v2) of ``num_samples`` x ``dim`` unit-ish
    vectors, initialised uniformly in [-s, s] with s = 1/sqrt(dim/3) as RepDistiller."""

    def __init__(self, dim: int, num_samples: int, k: int, T: float = 0.07, momentum: float = 0.5):
        super().__init__()
        self.num_samples, self.k, self.T, self.momentum = num_samples, k, T, momentum
        stdv = 1.0 / math.sqrt(dim / 3)
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("memory_s", torch.rand(num_samples, dim, generator=generator) * 2 * stdv - stdv)
        self.register_buffer("memory_t", torch.rand(num_samples, dim, generator=generator) * 2 * stdv - stdv)
        self.register_buffer("z", torch.tensor([-1.0, -1.0]))  # Z_s, Z_t; < 0 until the first batch

    def forward(self, v_s: torch.Tensor, v_t: torch.Tensor, idx: torch.Tensor, contrast_idx: torch.Tensor):
        """``contrast_idx`` (B, K+1): column 0 is ``idx``. Returns (scores_s, scores_t), each (B, K+1)."""
        b, dim = v_s.shape
        w_t = self.memory_t.index_select(0, contrast_idx.flatten()).view(b, -1, dim).detach()
        w_s = self.memory_s.index_select(0, contrast_idx.flatten()).view(b, -1, dim).detach()
        out_s = torch.exp(torch.bmm(w_t, v_s.unsqueeze(2)).squeeze(2) / self.T)  # student vs teacher bank
        out_t = torch.exp(torch.bmm(w_s, v_t.unsqueeze(2)).squeeze(2) / self.T)  # teacher vs student bank
        if self.z[0] < 0:
            self.z[0] = out_s.mean().detach() * self.num_samples
            self.z[1] = out_t.mean().detach() * self.num_samples
        out_s, out_t = out_s / self.z[0], out_t / self.z[1]
        with torch.no_grad():
            for bank, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
                pos = bank.index_select(0, idx) * self.momentum + v.detach() * (1 - self.momentum)
                bank.index_copy_(0, idx, pos / pos.norm(dim=1, keepdim=True))
        return out_s, out_t


class CRDLoss(nn.Module):
    """Projection heads + memory bank + NCE on both sides; ``forward(f_s, f_t, idx, target)``."""

    def __init__(
        self,
        s_dim: int,
        t_dim: int,
        num_samples: int,
        labels: torch.Tensor | None = None,
        feat_dim: int = 128,
        k: int | None = None,
        T: float = 0.07,
        momentum: float = 0.5,
    ):
        super().__init__()
        if num_samples < 2:
            raise ValueError("crd: needs at least 2 training samples")
        self.k = scaled_k(num_samples, k)
        self.num_samples = num_samples
        self.embed_s = Embed(s_dim, feat_dim)
        self.embed_t = Embed(t_dim, feat_dim)
        self.memory = ContrastMemory(feat_dim, num_samples, self.k, T, momentum)
        # Negatives from the other classes: for class c, the dataset indices whose label is not c.
        self._negatives: dict[int, torch.Tensor] = {}
        if labels is not None:
            labels = labels.cpu()
            for c in labels.unique().tolist():
                others = torch.nonzero(labels != c).flatten()
                if len(others):
                    self._negatives[int(c)] = others

    def sample(self, idx: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, K+1) indices: the sample itself, then K negatives (other classes when labels are known)."""
        b = idx.shape[0]
        neg = torch.empty(b, self.k, dtype=torch.long)
        target_cpu = target.cpu()
        if self._negatives:
            for c in target_cpu.unique().tolist():
                rows = torch.nonzero(target_cpu == c).flatten()
                pool = self._negatives.get(int(c))
                if pool is None:
                    neg[rows] = torch.randint(self.num_samples, (len(rows), self.k))
                else:
                    neg[rows] = pool[torch.randint(len(pool), (len(rows), self.k))]
        else:
            neg = torch.randint(self.num_samples, (b, self.k))
        return torch.cat([idx.cpu()[:, None], neg], dim=1).to(idx.device)

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, idx: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        v_s, v_t = self.embed_s(f_s), self.embed_t(f_t)
        out_s, out_t = self.memory(v_s, v_t, idx, self.sample(idx, target))
        return nce_loss(out_s, self.num_samples) + nce_loss(out_t, self.num_samples)
