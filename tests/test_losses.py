"""Every functional loss against its formula worked out here independently (numpy, loops), the
zeros and invariances the formulas imply, and where gradients go."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from edgekd.distill import functional as EF


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().numpy()


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0))


def _smooth_l1(a: np.ndarray, b: np.ndarray) -> float:
    d = np.abs(a - b)
    return float(np.where(d < 1, 0.5 * d * d, d - 0.5).mean())


def _pool(f: np.ndarray, size: int) -> np.ndarray:
    """Average pooling of a (B, C, H, W) map to size x size (H divisible by size)."""
    b, c, h, w = f.shape
    k = h // size
    return f.reshape(b, c, size, k, size, k).mean(axis=(3, 5))


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def rand(gen, *shape):
    return torch.randn(*shape, generator=gen)


# ---- KD, DKD ----------------------------------------------------------------------------------
def test_kd_by_hand(gen):
    s, t, T = rand(gen, 3, 5), rand(gen, 3, 5), 3.0
    ref = np.mean([_kl(_softmax(_np(t[b]) / T), _softmax(_np(s[b]) / T)) for b in range(3)]) * T * T
    assert EF.kd(s, t, T).item() == pytest.approx(ref, rel=1e-5)


def test_kd_t_squared_scaling(gen):
    """For large T, KL ~ ||(s - mean s) - (t - mean t)||^2 / (2 K T^2): T^2 keeps the loss scale fixed."""
    s, t = rand(gen, 4, 6), rand(gen, 4, 6)
    big = [EF.kd(s, t, T).item() for T in (50.0, 100.0, 200.0)]
    assert max(big) / min(big) < 1.02
    sc, tc = s - s.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    limit = ((sc - tc) ** 2).sum(1).mean().item() / (2 * 6)
    assert big[-1] == pytest.approx(limit, rel=0.01)
    # without the T^2 factor it would fall as 1/T^2
    assert EF.kd(s, t, 8.0).item() / 64 < EF.kd(s, t, 4.0).item() / 16


def _dkd_by_hand(s, t, y, alpha, beta, T):
    tckd = nckd = 0.0
    for b in range(s.shape[0]):
        ps, pt = _softmax(_np(s[b]) / T), _softmax(_np(t[b]) / T)
        g = int(y[b])
        bs, bt = np.array([ps[g], 1 - ps[g]]), np.array([pt[g], 1 - pt[g]])
        tckd += _kl(bt, bs)
        others = [j for j in range(len(ps)) if j != g]
        hs, ht = ps[others] / ps[others].sum(), pt[others] / pt[others].sum()
        nckd += _kl(ht, hs)
    n = s.shape[0]
    return (alpha * tckd / n + beta * nckd / n) * T * T


def test_dkd_by_hand(gen):
    s, t = rand(gen, 4, 5) * 3, rand(gen, 4, 5) * 3
    y = torch.tensor([0, 2, 4, 1])
    for alpha, beta, T in ((1.0, 8.0, 4.0), (0.5, 2.0, 1.0)):
        assert EF.dkd(s, t, y, alpha, beta, T).item() == pytest.approx(_dkd_by_hand(s, t, y, alpha, beta, T), rel=1e-5)


def test_dkd_identity_with_kd(gen):
    """KL(p_t||p_s) = KL(b_t||b_s) + (1 - p_t[y]) KL(p^_t||p^_s) (REFERENCES.md): per sample,
    KD equals DKD with alpha 1 and beta = 1 - p_t[y]."""
    s, t, T = rand(gen, 6, 7), rand(gen, 6, 7), 2.0
    y = torch.tensor([0, 1, 2, 3, 4, 6])
    for b in range(6):
        p_t_y = torch.softmax(t[b] / T, 0)[y[b]].item()
        lhs = EF.kd(s[b : b + 1], t[b : b + 1], T).item()
        rhs = EF.dkd(s[b : b + 1], t[b : b + 1], y[b : b + 1], alpha=1.0, beta=1 - p_t_y, T=T).item()
        assert lhs == pytest.approx(rhs, rel=1e-5, abs=1e-7)


def test_dkd_zero_for_identical_and_finite_for_extreme_logits(gen):
    z = rand(gen, 3, 4)
    y = torch.tensor([1, 0, 3])
    assert abs(EF.dkd(z, z, y).item()) < 1e-6
    big = torch.tensor([[1000.0, -1000.0, 0.0]])
    assert torch.isfinite(EF.dkd(big, -big, torch.tensor([0]), T=1.0))


# ---- feature maps ------------------------------------------------------------------------------
def test_fitnet_is_mse(gen):
    s, t = rand(gen, 2, 3, 4, 4), rand(gen, 2, 3, 4, 4)
    assert EF.fitnet(s, t).item() == pytest.approx(float(((_np(s) - _np(t)) ** 2).mean()), rel=1e-6)
    with pytest.raises(ValueError, match="connector"):
        EF.fitnet(s, t[:, :2])


def _att_np(f: np.ndarray, p: float) -> np.ndarray:
    b, c, h, w = f.shape
    a = np.zeros((b, h * w))
    for i in range(b):
        for pos in range(h * w):
            a[i, pos] = sum(f[i, ch].reshape(-1)[pos] ** p for ch in range(c)) / c
        a[i] /= math.sqrt((a[i] ** 2).sum())
    return a


def test_at_by_hand_with_pooling(gen):
    s = [rand(gen, 2, 3, 8, 8), rand(gen, 2, 4, 4, 4)]
    t = [rand(gen, 2, 5, 4, 4), rand(gen, 2, 6, 4, 4)]  # first pair: the student's map is pooled 8 -> 4
    ref = 0.0
    for fs, ft in zip(s, t, strict=True):
        fs_np, ft_np = _np(fs), _np(ft)
        if fs_np.shape[2] > ft_np.shape[2]:
            fs_np = _pool(fs_np, ft_np.shape[2])
        ref += float(((_att_np(fs_np, 2) - _att_np(ft_np, 2)) ** 2).mean())
    assert EF.at(s, t).item() == pytest.approx(ref, rel=1e-5)


def test_at_invariant_to_channel_permutation_and_zero_for_same_map(gen):
    s, t = [rand(gen, 2, 6, 4, 4)], [rand(gen, 2, 3, 4, 4)]
    perm = torch.randperm(6, generator=gen)
    assert EF.at([s[0][:, perm]], t).item() == pytest.approx(EF.at(s, t).item(), rel=1e-6)
    assert EF.at(s, [s[0][:, perm]]).item() < 1e-10


def test_sp_by_hand(gen):
    s, t = rand(gen, 3, 2, 2, 2), rand(gen, 3, 4, 1, 1)
    fs, ft = _np(s).reshape(3, -1), _np(t).reshape(3, -1)
    gs, gt = fs @ fs.T, ft @ ft.T
    gs = gs / np.sqrt((gs**2).sum(1, keepdims=True))
    gt = gt / np.sqrt((gt**2).sum(1, keepdims=True))
    assert EF.sp(s, t).item() == pytest.approx(float(((gt - gs) ** 2).sum() / 9), rel=1e-5)
    assert EF.sp(s, s * 3).item() < 1e-10  # Gram rows are L2-normalised: a global scale does not matter


def test_nst_by_hand(gen):
    s, t = [rand(gen, 2, 3, 2, 2)], [rand(gen, 2, 4, 4, 4)]  # the teacher's map is pooled 4 -> 2
    fs, ft = _np(s[0]).reshape(2, 3, -1), _pool(_np(t[0]), 2).reshape(2, 4, -1)
    fs = fs / np.linalg.norm(fs, axis=2, keepdims=True)
    ft = ft / np.linalg.norm(ft, axis=2, keepdims=True)

    def k(a, b):
        vals = [np.dot(a[n, i], b[n, j]) ** 2 for n in range(2) for i in range(a.shape[1]) for j in range(b.shape[1])]
        return np.mean(vals)

    ref = k(ft, ft) + k(fs, fs) - 2 * k(fs, ft)
    assert EF.nst(s, t).item() == pytest.approx(float(ref), rel=1e-5)
    assert abs(EF.nst(s, s).item()) < 1e-6


def test_fsp_by_hand(gen):
    s = [rand(gen, 2, 3, 4, 4), rand(gen, 2, 2, 2, 2), rand(gen, 2, 2, 2, 2)]
    t = [rand(gen, 2, 3, 4, 4), rand(gen, 2, 2, 2, 2), rand(gen, 2, 2, 2, 2)]

    def fsp_np(bottom, top):
        bottom = _pool(bottom, top.shape[2]) if bottom.shape[2] > top.shape[2] else bottom
        b, cb, h, w = bottom.shape
        ct = top.shape[1]
        g = np.zeros((b, ct, cb))
        for n, i, j in itertools.product(range(b), range(ct), range(cb)):
            g[n, i, j] = (top[n, i] * bottom[n, j]).sum() / (h * w)
        return g

    ref = sum(
        float(((fsp_np(_np(s[i]), _np(s[i + 1])) - fsp_np(_np(t[i]), _np(t[i + 1]))) ** 2).mean()) for i in range(2)
    )
    assert EF.fsp(s, t).item() == pytest.approx(ref, rel=1e-5)
    assert EF.fsp(s, s).item() == 0.0


def test_fsp_takes_pairs_as_repdistiller(gen):
    """RepDistiller's FSP takes (bottom, top) pairs, not necessarily consecutive; both forms agree
    with an independent numpy computation, and the flat form equals its consecutive pairs."""
    s = [rand(gen, 2, 3, 4, 4), rand(gen, 2, 2, 2, 2), rand(gen, 2, 4, 2, 2)]
    t = [rand(gen, 2, 3, 4, 4), rand(gen, 2, 2, 2, 2), rand(gen, 2, 4, 2, 2)]

    def fsp_np(bottom, top):  # G[b, i, j] = mean over positions of top_i * bottom_j, bottom pooled to top's size
        if bottom.shape[2] > top.shape[2]:
            bottom = _pool(bottom, top.shape[2])
        return np.einsum("bihw,bjhw->bij", top, bottom) / (top.shape[2] * top.shape[3])

    pairs = [(0, 2), (1, 2)]  # skip connections, as RepDistiller's two-phase FSP on the stem and stages
    ref = sum(float(((fsp_np(_np(s[i]), _np(s[j])) - fsp_np(_np(t[i]), _np(t[j]))) ** 2).mean()) for i, j in pairs)
    got = EF.fsp([(s[i], s[j]) for i, j in pairs], [(t[i], t[j]) for i, j in pairs])
    assert got.item() == pytest.approx(ref, rel=1e-5)
    flat = EF.fsp(s, t)
    assert flat.item() == pytest.approx(EF.fsp([(s[0], s[1]), (s[1], s[2])], [(t[0], t[1]), (t[1], t[2])]).item())
    ref_flat = sum(
        float(((fsp_np(_np(s[i]), _np(s[i + 1])) - fsp_np(_np(t[i]), _np(t[i + 1]))) ** 2).mean()) for i in range(2)
    )
    assert flat.item() == pytest.approx(ref_flat, rel=1e-5)
    with pytest.raises(ValueError, match="pairs but"):
        EF.fsp([(s[0], s[1])], [(t[0], t[1]), (t[1], t[2])])
    with pytest.raises(ValueError, match="need >= 2"):
        EF.fsp([s[0]], [t[0]])
    with pytest.raises(ValueError, match="not a mix"):
        EF.fsp([s[0], (s[0], s[1])], [t[0], t[1]])


# ---- relations of embeddings -----------------------------------------------------------------
def _rkd_np(s: np.ndarray, t: np.ndarray, wd: float, wa: float) -> float:
    n = len(s)

    def dist(e):
        d = np.array([[np.linalg.norm(e[i] - e[j]) for j in range(n)] for i in range(n)])
        return d / (d.sum() / (n * n - n))

    def angle(e):
        out = np.zeros((n, n, n))
        for i, j, k in itertools.product(range(n), repeat=3):
            u, v = e[j] - e[i], e[k] - e[i]
            nu, nv = np.linalg.norm(u), np.linalg.norm(v)
            out[i, j, k] = 0.0 if nu == 0 or nv == 0 else np.dot(u, v) / (nu * nv)
        return out

    return wd * _smooth_l1(dist(s), dist(t)) + wa * _smooth_l1(angle(s), angle(t))


def test_rkd_by_hand(gen):
    s, t = rand(gen, 5, 3), rand(gen, 5, 4) * 2
    assert EF.rkd(s, t).item() == pytest.approx(_rkd_np(_np(s), _np(t), 25.0, 50.0), rel=1e-4)


def test_rkd_invariant_to_global_scale(gen):
    s, t = rand(gen, 6, 4), rand(gen, 6, 4)
    assert EF.rkd(s * 7.5, t).item() == pytest.approx(EF.rkd(s, t).item(), rel=1e-4)
    assert EF.rkd(s, t * 0.1).item() == pytest.approx(EF.rkd(s, t).item(), rel=1e-4)
    assert EF.rkd(s, s * 3.0).item() < 1e-6


def test_pkt_by_hand(gen):
    s, t, eps = rand(gen, 4, 3), rand(gen, 4, 5), 1e-7

    def cond(e):
        e = e / (np.linalg.norm(e, axis=1, keepdims=True) + eps)
        k = np.array([[(np.dot(a, b) + 1) / 2 for b in e] for a in e])
        return k / k.sum(1, keepdims=True)

    ps, pt = cond(_np(s)), cond(_np(t))
    ref = float(np.mean(pt * np.log((pt + eps) / (ps + eps))))
    assert EF.pkt(s, t).item() == pytest.approx(ref, rel=1e-4)
    assert abs(EF.pkt(s, s).item()) < 1e-7


def test_cc_by_hand(gen):
    s, t, gamma = rand(gen, 4, 3), rand(gen, 4, 6), 0.4

    def kernel(e, order):
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        return np.array(
            [
                [
                    math.exp(-2 * gamma)
                    * sum((2 * gamma) ** p / math.factorial(p) * np.dot(a, b) ** p for p in range(order + 1))
                    for b in e
                ]
                for a in e
            ]
        )

    for order in (1, 2, 3):
        ref = float(((kernel(_np(s), order) - kernel(_np(t), order)) ** 2).sum() / 16)
        assert EF.cc(s, t, gamma, order).item() == pytest.approx(ref, rel=1e-5)
    # the Taylor series converges to the Gaussian RBF of the unit vectors
    e = torch.nn.functional.normalize(s, dim=1)
    rbf = torch.exp(-gamma * torch.cdist(e, e) ** 2)
    assert torch.allclose(EF.cc_kernel(s, gamma, order=12), rbf, atol=1e-5)
    assert EF.cc(s, s * 4).item() < 1e-12


# ---- gradients reach the student only --------------------------------------------------------
CASES = {
    "kd": lambda s, t: EF.kd(s["logits"], t["logits"]),
    "dkd": lambda s, t: EF.dkd(s["logits"], t["logits"], torch.tensor([0, 1, 2, 3])),
    "fitnet": lambda s, t: EF.fitnet(s["map"], t["map"]),
    "at": lambda s, t: EF.at([s["map"]], [t["map"]]),
    "sp": lambda s, t: EF.sp(s["map"], t["map"]),
    "nst": lambda s, t: EF.nst([s["map"]], [t["map"]]),
    "fsp": lambda s, t: EF.fsp([s["map"], s["map"] * 2], [t["map"], t["map"].flip(1)]),
    "rkd": lambda s, t: EF.rkd(s["emb"], t["emb"]),
    "pkt": lambda s, t: EF.pkt(s["emb"], t["emb"]),
    "cc": lambda s, t: EF.cc(s["emb"], t["emb"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_reaches_student_not_teacher(name, gen):
    def side(requires_grad):
        return {
            "logits": rand(gen, 4, 5).requires_grad_(requires_grad),
            "map": rand(gen, 4, 3, 4, 4).requires_grad_(requires_grad),
            "emb": rand(gen, 4, 6).requires_grad_(requires_grad),
        }

    s, t = side(True), side(False)
    loss = CASES[name](s, t)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert any(v.grad is not None and v.grad.abs().sum() > 0 for v in s.values())
    assert all(v.grad is None for v in t.values())
