"""Distillation losses as pure functions of tensors, student first and teacher second.

Each docstring gives the formula and the paper, and which reference implementation it matches
(RepDistiller: github.com/HobbitLong/RepDistiller, ``distiller_zoo/``; mdistiller:
github.com/megvii-research/mdistiller; torchdistill: github.com/yoshitomo-matsubara/torchdistill).
Where those differ, the docstring says which one is followed. The methods in
``edgekd.distill.methods`` are thin wrappers that pick the taps, the connectors and the weights.

Every loss is a scalar tensor. The teacher's tensors are normally computed under ``no_grad``;
the losses do not detach them, so callers decide (the trainer never gives the teacher gradients).
CRD, which keeps a memory bank, is a module: ``edgekd.distill.crd``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _same_batch(name: str, s: torch.Tensor, t: torch.Tensor) -> None:
    if s.shape[0] != t.shape[0]:
        raise ValueError(f"{name}: student batch {s.shape[0]} and teacher batch {t.shape[0]} differ")


def _pool_to_common(s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger of two feature maps to the smaller one's spatial size (RepDistiller)."""
    sh, th = s.shape[-2:], t.shape[-2:]
    if sh[0] > th[0]:
        s = F.adaptive_avg_pool2d(s, th)
    elif sh[0] < th[0]:
        t = F.adaptive_avg_pool2d(t, sh)
    return s, t


def _stage_pairs(
    name: str, student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (student, teacher) maps of each stage pair, checked, the larger pooled to the smaller size."""
    if len(student_feats) != len(teacher_feats):
        raise ValueError(f"{name}: {len(student_feats)} student maps but {len(teacher_feats)} teacher maps")
    for s, t in zip(student_feats, teacher_feats, strict=True):
        _same_batch(name, s, t)
    return [_pool_to_common(s, t) for s, t in zip(student_feats, teacher_feats, strict=True)]


# ---- response-based: logits -------------------------------------------------------------------
def kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 4.0) -> torch.Tensor:
    """Hinton knowledge distillation (Hinton, Vinyals, Dean, 2015, "Distilling the Knowledge in a
    Neural Network").

        kd = T^2 * (1/B) * sum_b KL( softmax(t_b / T) || softmax(s_b / T) )

    The KL is summed over classes and averaged over the batch; the T^2 factor keeps the gradient
    scale independent of T. Identical to RepDistiller's ``DistillKL`` and mdistiller's ``kd_loss``.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"kd: student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ"
        )
    log_p_s = F.log_softmax(student_logits / T, dim=1)
    log_p_t = F.log_softmax(teacher_logits / T, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (T * T)


def dkd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    T: float = 4.0,
) -> torch.Tensor:
    """Decoupled knowledge distillation (Zhao, Cui, Song, Qiu, Liang, CVPR 2022, "Decoupled
    Knowledge Distillation").

    With p = softmax(z / T), the binary target/non-target split b = [p_y, 1 - p_y] and the
    distribution over the non-target classes p^_j = p_j / (1 - p_y), j != y:

        TCKD = T^2 * (1/B) * sum_b KL(b_t || b_s)
        NCKD = T^2 * (1/B) * sum_b KL(p^_t || p^_s)
        dkd  = alpha * TCKD + beta * NCKD

    Hinton's KD is KL(p_t||p_s) = KL(b_t||b_s) + (1 - p_t[y]) * KL(p^_t||p^_s); DKD drops the
    (1 - p_t[y]) factor and weights the two parts freely. Matches mdistiller's ``dkd_loss`` (which
    masks the target logit with -1000 for NCKD; here it is excluded exactly, in log space). The
    warm-up (x min(epoch/20, 1)) is the method's job, not this function's.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"dkd: student logits {tuple(student_logits.shape)} and teacher logits differ")
    gt = F.one_hot(target, student_logits.shape[1]).bool()

    def parts(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = z / T
        log_all = torch.logsumexp(z, dim=1, keepdim=True)
        log_other = torch.logsumexp(z.masked_fill(gt, -math.inf), dim=1, keepdim=True)
        log_b = torch.cat([z.gather(1, target[:, None]) - log_all, log_other - log_all], dim=1)  # (B, 2)
        log_hat = (z - log_other).masked_fill(gt, 0.0)  # log p^_j on non-target classes; 0 on the target
        return log_b, log_hat

    log_b_s, log_hat_s = parts(student_logits)
    log_b_t, log_hat_t = parts(teacher_logits)
    batch = student_logits.shape[0]
    tckd = (log_b_t.exp() * (log_b_t - log_b_s)).sum() / batch
    p_hat_t = log_hat_t.exp().masked_fill(gt, 0.0)
    nckd = (p_hat_t * (log_hat_t - log_hat_s)).sum() / batch
    return (alpha * tckd + beta * nckd) * (T * T)


# ---- feature-based: intermediate maps --------------------------------------------------------
def fitnet(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """FitNets hint loss (Romero et al., ICLR 2015, "FitNets: Hints for Thin Deep Nets").

        fitnet = mean over all elements of (r(f_s) - f_t)^2

    The regressor r (a connector, e.g. conv-BN-ReLU) is applied by the caller. RepDistiller's
    ``HintLoss`` (``nn.MSELoss()``).
    """
    if student_feat.shape != teacher_feat.shape:
        raise ValueError(
            f"fitnet: student {tuple(student_feat.shape)} and teacher {tuple(teacher_feat.shape)} differ; "
            "apply a connector first"
        )
    return F.mse_loss(student_feat, teacher_feat)


def attention_map(feat: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """AT's spatial attention: mean over channels of f^p, flattened over HW and L2-normalised: (B, HW)."""
    return F.normalize(feat.pow(p).mean(1).flatten(1), dim=1)


def at(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor], p: float = 2.0) -> torch.Tensor:
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention").

        a(f) = normalize_L2( mean_c f_c^p )  over the HW positions
        at   = sum over pairs (s, t) of mean_{b, hw} (a(s) - a(t))^2

    A larger map is average-pooled to the smaller size first. RepDistiller's ``Attention`` (summed
    over the stage pairs by its training loop); channel counts may differ.
    """
    pairs = _stage_pairs("at", student_feats, teacher_feats)
    total = student_feats[0].new_zeros(())
    for s, t in pairs:
        total = total + (attention_map(s, p) - attention_map(t, p)).pow(2).mean()
    return total


def sp(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving KD (Tung & Mori, ICCV 2019, "Similarity-Preserving Knowledge Distillation").

        G = F F^T  (B x B, F the features flattened per sample),  G~ = G with rows L2-normalised
        sp = || G~_t - G~_s ||_F^2 / B^2

    RepDistiller's ``Similarity`` and the paper (L2 row normalisation). torchdistill's ``SPLoss``
    normalises rows with L1 instead; edgekd follows the paper and RepDistiller.
    """
    _same_batch("sp", student_feat, teacher_feat)
    b = student_feat.shape[0]
    fs, ft = student_feat.reshape(b, -1), teacher_feat.reshape(b, -1)
    gs, gt = F.normalize(fs @ fs.t(), dim=1), F.normalize(ft @ ft.t(), dim=1)
    return (gt - gs).pow(2).sum() / (b * b)


def nst(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Neuron selectivity transfer (Huang & Wang, 2017, "Like What You Like: Knowledge Distill via
    Neuron Selectivity Transfer").

    Each channel's map, flattened over HW and L2-normalised, is one sample; with the polynomial
    kernel k(x, y) = (x . y)^2, the squared MMD between the student's and the teacher's channel sets:

        nst = mean_{i,j} k(t_i, t_j) + mean_{i,j} k(s_i, s_j) - 2 mean_{i,j} k(s_i, t_j)

    (means also over the batch), summed over the stage pairs; the larger map is pooled to the
    smaller size. RepDistiller's ``NSTLoss`` (full loss).
    """
    pairs = _stage_pairs("nst", student_feats, teacher_feats)
    total = student_feats[0].new_zeros(())
    for s, t in pairs:
        s = F.normalize(s.flatten(2), dim=2)
        t = F.normalize(t.flatten(2), dim=2)

        def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (a @ b.transpose(1, 2)).pow(2).mean()

        total = total + k(t, t) + k(s, s) - 2 * k(s, t)
    return total


def fsp_matrix(bottom: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """The FSP ("flow of solution procedure") matrix of two maps: (B, C_top, C_bottom), the inner
    product over positions divided by HW; the larger map is average-pooled to the smaller size."""
    bottom, top = _pool_to_common(bottom, top)
    return top.flatten(2) @ bottom.flatten(2).transpose(1, 2) / bottom.shape[-2:].numel()


def _fsp_pairs(maps: Sequence, side: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """FSP's (bottom, top) pairs from either form: a flat list of consecutive maps f_1..f_n gives
    the n - 1 pairs (f_i, f_{i+1}); a list of (bottom, top) tuples is used as it is."""
    maps = list(maps)
    if maps and all(isinstance(m, (tuple, list)) for m in maps):
        if any(len(m) != 2 for m in maps):
            raise ValueError(f"fsp: each {side} pair must be (bottom, top), got lengths {[len(m) for m in maps]}")
        return [(m[0], m[1]) for m in maps]
    if all(isinstance(m, torch.Tensor) for m in maps):
        if len(maps) < 2:
            raise ValueError(f"fsp: need >= 2 {side} maps (or >= 1 (bottom, top) pair), got {len(maps)}")
        return list(zip(maps[:-1], maps[1:], strict=True))
    raise ValueError(f"fsp: {side} must be a list of maps or a list of (bottom, top) pairs, not a mix")


def fsp(student_maps: Sequence, teacher_maps: Sequence) -> torch.Tensor:
    """Flow of solution procedure (Yim, Joo, Bae, Kim, CVPR 2017, "A Gift from Knowledge Distillation").

    Each side is either a flat list of consecutive maps f_1..f_n, whose pairs are (f_i, f_{i+1}),
    or a list of (bottom, top) pairs as RepDistiller's ``FSP`` takes them (``g_s``/``g_t`` of
    pairs). For each pair G_i = FSP(bottom_i, top_i) (see :func:`fsp_matrix`), and

        fsp = sum_i mean_{b, c, c'} (G_i^s - G_i^t)^2

    Student and teacher must have the same channel counts at each map (use connectors otherwise).
    RepDistiller's ``FSP`` (average pooling, squared error, summed over pairs); torchdistill's uses
    adaptive max pooling and a non-squared norm.
    """
    s_pairs, t_pairs = _fsp_pairs(student_maps, "student"), _fsp_pairs(teacher_maps, "teacher")
    if len(s_pairs) != len(t_pairs):
        raise ValueError(f"fsp: {len(s_pairs)} student pairs but {len(t_pairs)} teacher pairs")
    total = s_pairs[0][0].new_zeros(())
    for (s_bottom, s_top), (t_bottom, t_top) in zip(s_pairs, t_pairs, strict=True):
        gs, gt = fsp_matrix(s_bottom, s_top), fsp_matrix(t_bottom, t_top)
        if gs.shape != gt.shape:
            raise ValueError(f"fsp: student FSP matrix {tuple(gs.shape)} and teacher {tuple(gt.shape)} differ")
        total = total + (gs - gt).pow(2).mean()
    return total


# ---- relation-based: the batch's embeddings -------------------------------------------------
def _pairwise_distances(e: torch.Tensor) -> torch.Tensor:
    sq = e.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp(min=1e-12)
    eye = torch.eye(e.shape[0], dtype=torch.bool, device=e.device)
    return d2.sqrt().masked_fill(eye, 0.0)


def rkd(
    student_emb: torch.Tensor, teacher_emb: torch.Tensor, w_dist: float = 25.0, w_angle: float = 50.0
) -> torch.Tensor:
    """Relational KD (Park, Kim, Lu, Cho, CVPR 2019, "Relational Knowledge Distillation").

    Distance: d_ij = ||e_i - e_j|| / mu, mu = the mean of d over the pairs i != j (the diagonal is 0).
    Angle: for every triplet (i, j, k), cos of the angle at j: <(e_i - e_j)/||.||, (e_k - e_j)/||.||>
    (0 where a difference is zero). With smooth L1 (beta 1) averaged over all B^2 / B^3 entries:

        rkd = w_dist * smoothL1(d_s, d_t) + w_angle * smoothL1(angle_s, angle_t)

    RepDistiller's ``RKDLoss`` (w_dist 25, w_angle 50); it takes mu over the entries d > 0, which
    is the same unless two samples coincide.
    """
    _same_batch("rkd", student_emb, teacher_emb)
    s, t = student_emb.flatten(1), teacher_emb.flatten(1)
    b = s.shape[0]
    off = ~torch.eye(b, dtype=torch.bool, device=s.device)

    def dist(e: torch.Tensor) -> torch.Tensor:
        d = _pairwise_distances(e)
        return d / d[off].mean()

    def angle(e: torch.Tensor) -> torch.Tensor:
        diff = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)  # diff[j, i] = e_i - e_j
        return torch.bmm(diff, diff.transpose(1, 2)).flatten()

    loss_d = F.smooth_l1_loss(dist(s), dist(t))
    loss_a = F.smooth_l1_loss(angle(s), angle(t))
    return w_dist * loss_d + w_angle * loss_a


def pkt(student_emb: torch.Tensor, teacher_emb: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018, "Learning Deep Representations
    with Probabilistic Knowledge Transfer"), with the cosine kernel.

        K_ij = (cos(e_i, e_j) + 1) / 2,   P_ij = K_ij / sum_j K_ij   (for student and teacher)
        pkt  = mean_{i,j} P^t_ij * log((P^t_ij + eps) / (P^s_ij + eps))

    RepDistiller's ``PKT`` (the diagonal included, as there).
    """
    _same_batch("pkt", student_emb, teacher_emb)

    def cond_prob(e: torch.Tensor) -> torch.Tensor:
        e = e.flatten(1)
        e = e / (e.norm(dim=1, keepdim=True) + eps)
        k = (e @ e.t() + 1.0) / 2.0
        return k / k.sum(dim=1, keepdim=True)

    ps, pt = cond_prob(student_emb), cond_prob(teacher_emb)
    return (pt * torch.log((pt + eps) / (ps + eps))).mean()


def cc_kernel(emb: torch.Tensor, gamma: float = 0.4, order: int = 2) -> torch.Tensor:
    """CC's correlation matrix of L2-normalised embeddings: the Gaussian RBF exp(-gamma ||x - y||^2)
    = exp(-2 gamma) exp(2 gamma x.y) for unit vectors, with exp(u) replaced by its Taylor series
    up to ``order``: exp(-2 gamma) * sum_{p=0..order} (2 gamma)^p / p! * (x.y)^p.  (B, B)."""
    e = F.normalize(emb.flatten(1), dim=1)
    dot = e @ e.t()
    k = torch.ones_like(dot)
    for p in range(1, order + 1):
        k = k + (2 * gamma) ** p / math.factorial(p) * dot.pow(p)
    return math.exp(-2 * gamma) * k


def cc(student_emb: torch.Tensor, teacher_emb: torch.Tensor, gamma: float = 0.4, order: int = 2) -> torch.Tensor:
    """Correlation congruence (Peng et al., ICCV 2019, "Correlation Congruence for Knowledge
    Distillation"): match the B x B sample-correlation matrices (:func:`cc_kernel`, Gaussian RBF by
    Taylor expansion, gamma 0.4, order 2 as torchdistill's CCKD config):

        cc = || K(e_s) - K(e_t) ||_F^2 / B^2

    The paper's squared Frobenius norm; torchdistill's ``CCKDLoss`` takes the norm without the
    square. RepDistiller's ``Correlation`` is a different, simplified code (products of
    consecutive samples' differences) and is not followed. Embedding sizes may differ.
    """
    _same_batch("cc", student_emb, teacher_emb)
    b = student_emb.shape[0]
    return (cc_kernel(student_emb, gamma, order) - cc_kernel(teacher_emb, gamma, order)).pow(2).sum() / (b * b)
