"""Gravity attention ops of NGT: the readable reference, the chunked fast path, the dispatcher, the regulariser.

Shipped to the Hub with the model (imports only torch).

Dimension letters: B batch, H heads, Q queries, K keys, C per-head coordinate size, D per-head value size,
Z latent coordinate size, S sampled positions.

Score of query i for key j in head h (masses in the score, the default):
    d_ij^2 = |c_i - c_j|^2                                 squared distance of the per-head coordinates c = W_h z
    s_ij   = m_i m_j (beta_h - gamma_h / (d_ij^2 + eps))   repulsive kernel (the original's)
    s_ij   = m_i m_j (beta_h + gamma_h / (d_ij^2 + eps))   attractive kernel
    s_ij  += log sigmoid(k (1 - d_ij^2 / r^2))             radius cutoff (soft; "hard" = 0 / -1e9 straight-through)
    s_ii   = s_self_h                                      when the learned self score is enabled
Keys after the query (causal) and padded keys are excluded; every query keeps its own position, so a row is never
empty (a padded query attends to itself and its output is ignored).

The fast path uses d_ij^2 = |c_i|^2 + |c_j|^2 - 2 c_i . c_j (one matmul of augmented vectors, in float32): the
(B, H, Q, K, C) difference tensor of the reference is never built. Queries are processed in blocks; a block only
sees the keys up to its last query, and runs as a fused autograd function whose backward rebuilds that block's
scores, so only one block of (Q x K) scores is alive at once, in the forward and in the backward.
"""

import functools

import torch
import torch.nn.functional as F


# Score of a pair outside the hard radius. Finite (not the dtype minimum) so that the straight-through estimator can
# add the soft penalty's gradient; exp(-1e9) is exactly 0 in float32.
HARD_CUTOFF_SCORE = -1e9


def _check_kernel(kernel, cutoff):
    if kernel not in ("repulsive", "attractive"):
        raise ValueError(f"kernel={kernel!r} is invalid: must be 'repulsive' or 'attractive'")
    if cutoff not in ("hard", "soft", "none"):
        raise ValueError(f"cutoff={cutoff!r} is invalid: must be 'hard', 'soft' or 'none'")


def _radius_penalty(sq_dist, radius, cutoff, sharpness):
    """log of the radius gate for squared distances `sq_dist`; shape as `sq_dist`."""
    r2 = radius.float() ** 2
    needs_grad = torch.is_grad_enabled() and (radius.requires_grad or sq_dist.requires_grad)
    if cutoff == "hard" and not needs_grad:
        return torch.where(sq_dist > r2, HARD_CUTOFF_SCORE, 0.0)
    # log sigmoid(k (1 - d^2 / r^2)) = -softplus(k (d^2 / r^2 - 1))
    soft = -F.softplus(sq_dist * (sharpness / r2) - sharpness)
    if cutoff == "soft":
        return soft
    # Straight-through: the forward value is the hard mask, the gradient is the soft gate's, so the radius learns.
    hard = torch.where(sq_dist > r2, HARD_CUTOFF_SCORE, 0.0)
    return soft + (hard - soft).detach()


def _allowed_pairs(q_start, num_queries, num_keys, key_valid, device):
    """(diag, allowed): diag (Q, K) marks i == j; allowed (B or 1, 1, Q, K) is causal & (valid key | diag)."""
    q_index = torch.arange(q_start, q_start + num_queries, device=device)[:, None]  # (Q, 1) timeline index
    k_index = torch.arange(num_keys, device=device)[None, :]  # (1, K)
    diag = q_index == k_index
    allowed = k_index <= q_index  # (Q, K)
    if key_valid is not None:
        allowed = allowed & (key_valid[:, None, None, :] | diag)  # (B, 1, Q, K)
    return diag, allowed


def naive_gravity_scores(
    coords_q,
    coords_k,
    mass_q,
    mass_k,
    gamma,
    beta,
    radius,
    self_score,
    key_valid,
    q_start,
    *,
    kernel,
    eps,
    cutoff,
    sharpness,
):
    """Reference gravity scores, written for clarity (materialises the coordinate differences).

    Args:
        coords_q: (B, H, Q, C) per-head coordinates of the queries, c_i.
        coords_k: (B, H, K, C) per-head coordinates of the keys, c_j (keys are timeline positions 0..K-1).
        mass_q: (B, Q) query masses m_i, or None when masses are not in the score.
        mass_k: (B, K) key masses m_j, or None.
        gamma: (H,) positive gravity strengths; beta: (H,) biases or None; radius: () positive radius r or None;
        self_score: (H,) learned s_self or None; key_valid: (B, K) bool (False = padding) or None.
        q_start: timeline position of the first query (the number of cached keys before it).
    Returns:
        (B, H, Q, K) float32 scores; excluded pairs hold the float32 minimum.
    """
    _check_kernel(kernel, cutoff)
    num_heads, num_queries, num_keys = coords_q.shape[1], coords_q.shape[2], coords_k.shape[2]
    diff = coords_q.float()[:, :, :, None, :] - coords_k.float()[:, :, None, :, :]  # (B, H, Q, K, C)
    sq_dist = (diff * diff).sum(-1)  # (B, H, Q, K)
    gravity = gamma.float().view(1, num_heads, 1, 1) / (sq_dist + eps)
    if kernel == "repulsive":
        gravity = -gravity
    if mass_q is not None:
        mass_products = mass_q.float()[:, None, :, None] * mass_k.float()[:, None, None, :]  # (B, 1, Q, K)
        scores = (beta.float().view(1, num_heads, 1, 1) + gravity) * mass_products
    else:
        scores = gravity
    if cutoff != "none":
        scores = scores + _radius_penalty(sq_dist, radius, cutoff, sharpness)
    diag, allowed = _allowed_pairs(q_start, num_queries, num_keys, key_valid, coords_q.device)
    if self_score is not None:
        scores = torch.where(diag, self_score.float().view(1, num_heads, 1, 1), scores)
    return scores.masked_fill(~allowed, torch.finfo(torch.float32).min)


def naive_gravity_attention(
    coords_q,
    coords_k,
    mass_q,
    mass_k,
    values,
    gamma,
    beta,
    radius,
    self_score,
    key_valid,
    q_start,
    *,
    kernel,
    eps,
    cutoff,
    sharpness,
    dropout_p=0.0,
    training=False,
):
    """Reference gravity attention: softmax over `naive_gravity_scores`, times the values (B, H, K, D).

    Returns the (B, H, Q, D) output in the values' dtype.
    """
    with torch.autocast(device_type=coords_q.device.type, enabled=False):
        scores = naive_gravity_scores(
            coords_q, coords_k, mass_q, mass_k, gamma, beta, radius, self_score, key_valid, q_start,
            kernel=kernel, eps=eps, cutoff=cutoff, sharpness=sharpness,
        )  # fmt: skip
        probs = torch.softmax(scores, dim=-1)
    probs = F.dropout(probs, p=dropout_p, training=training)
    return torch.matmul(probs.to(values.dtype), values)


def _squared_distances(coords_q, coords_k):
    """d_ij^2 = |c_i|^2 + |c_j|^2 - 2 c_i . c_j as ONE matmul of augmented vectors [c_i, |c_i|^2, 1] . [-2 c_j, 1, |c_j|^2]:
    (B, H, Q, C+2) x (B, H, C+2, K) -> (B, H, Q, K). Differentiable; may be slightly negative from rounding."""
    q_aug = torch.cat([coords_q, (coords_q * coords_q).sum(-1, keepdim=True), torch.ones_like(coords_q[..., :1])], -1)
    k_aug = torch.cat(
        [-2.0 * coords_k, torch.ones_like(coords_k[..., :1]), (coords_k * coords_k).sum(-1, keepdim=True)], -1
    )
    return torch.matmul(q_aug, k_aug.transpose(-1, -2))


def _fast_scores(
    coords_q, coords_k, mass_q, mass_k, gamma, beta, radius, self_score, key_valid, q_start, kernel, eps, cutoff,
    sharpness,
):  # fmt: skip
    """Same scores as `naive_gravity_scores`, from matmuls, through autograd; all inputs already float32."""
    num_heads, num_queries, num_keys = coords_q.shape[1], coords_q.shape[2], coords_k.shape[2]
    sq_dist = _squared_distances(coords_q, coords_k)
    diag, allowed = _allowed_pairs(q_start, num_queries, num_keys, key_valid, coords_q.device)
    # Rounding can make the expansion slightly negative; the diagonal is exactly 0, as in the reference.
    sq_dist = sq_dist.clamp_min(0.0).masked_fill(diag, 0.0)
    inv = torch.reciprocal(sq_dist + eps)
    signed_gamma = gamma.view(1, num_heads, 1, 1) * (-1.0 if kernel == "repulsive" else 1.0)
    if mass_q is not None:
        # m_i m_j (beta + sign gamma / (d^2 + eps)) with m_i folded into the (B, H, Q, 1) coefficients
        m_q = mass_q[:, None, :, None]
        scores = torch.addcmul(beta.view(1, num_heads, 1, 1) * m_q, signed_gamma * m_q, inv) * mass_k[:, None, None, :]
    else:
        scores = signed_gamma * inv
    if cutoff != "none":
        scores = scores + _radius_penalty(sq_dist, radius, cutoff, sharpness)
    if self_score is not None:
        scores = torch.where(diag, self_score.view(1, num_heads, 1, 1), scores)
    return scores.masked_fill(~allowed, torch.finfo(torch.float32).min), sq_dist, allowed, diag


def _attention_block(
    coords_q, coords_k, mass_q, mass_k, values, gamma, beta, radius, self_score, key_valid, q_start,
    kernel, eps, cutoff, sharpness, dropout_p, training,
):  # fmt: skip
    """One block of queries through plain autograd (keeps its score matrices for the backward): (B, H, Qb, D)."""
    with torch.autocast(device_type=coords_q.device.type, enabled=False):
        scores = _fast_scores(
            coords_q, coords_k, mass_q, mass_k, gamma, beta, radius, self_score, key_valid, q_start,
            kernel, eps, cutoff, sharpness,
        )[0]  # fmt: skip
        probs = torch.softmax(scores, dim=-1)
    probs = F.dropout(probs, p=dropout_p, training=training)
    return torch.matmul(probs.to(values.dtype), values)


def _rng_state(device):
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _dropout_keep_mask(probs, dropout_p, rng_state=None):
    """Scaled keep-mask of inverted dropout. Without `rng_state` it is drawn from (and advances) the global RNG, as
    `F.dropout` does; with the state saved before that draw, the backward pass redraws the very same mask."""
    if rng_state is None:
        return torch.empty_like(probs).bernoulli_(1.0 - dropout_p).div_(1.0 - dropout_p)
    devices = [probs.device] if probs.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if probs.device.type == "cuda":
            torch.cuda.set_rng_state(rng_state, probs.device)
        else:
            torch.set_rng_state(rng_state)
        return _dropout_keep_mask(probs, dropout_p)


def _block_scores(
    coords_q, coords_k, coef_a, coef_b, mass_k, r2, self_score, key_valid, q_start, eps, cutoff, sharpness
):
    """Scores of one block of queries, built in place without autograd (the fused path's forward and recompute).

    s_ij = m_j (a_i + b_i / (d_ij^2 + eps)) + gate_r(d_ij^2), where a_i = beta m_i and b_i = -/+ gamma m_i (or
    a = None, b = -/+ gamma and no m_j when masses are not in the score). Keys are timeline positions
    0..q_start+Qb-1, query i sits at q_start + i. Returns (scores, sq_dist, inv), each (B, H, Qb, K) float32,
    inv = 1 / (d^2 + eps). The forward and the backward build the scores with the same operations, so a row with a
    single key gets probability exactly 1 in both.
    """
    num_heads, num_queries = coords_q.shape[1], coords_q.shape[2]
    sq_dist = _squared_distances(coords_q, coords_k)
    sq_dist.clamp_(min=0.0)
    sq_dist.diagonal(offset=q_start, dim1=-2, dim2=-1).zero_()  # d_ii = 0 exactly
    inv = torch.add(sq_dist, eps).reciprocal_()
    scores = torch.mul(inv, coef_b) if coef_a is None else torch.addcmul(coef_a, coef_b, inv)
    if mass_k is not None:
        scores.mul_(mass_k)
    if cutoff == "hard":
        scores.masked_fill_(sq_dist > r2, HARD_CUTOFF_SCORE)
    elif cutoff == "soft":
        scores.sub_(F.softplus(sq_dist * (sharpness / r2) - sharpness))
    diagonal = scores.diagonal(offset=q_start, dim1=-2, dim2=-1)  # (B, H, Qb) view of s_ii
    if self_score is not None:
        diagonal.copy_(self_score.view(1, num_heads, 1).expand_as(diagonal))
    if key_valid is not None:
        kept = diagonal.clone()  # a padded query still sees itself
        scores.masked_fill_(~key_valid[:, None, None, :], torch.finfo(torch.float32).min)
        diagonal.copy_(kept)
    # causal: only the last Qb keys can lie after a query (the strict upper triangle of that square)
    future = torch.ones(num_queries, num_queries, dtype=torch.bool, device=scores.device).triu_(1)
    scores[..., q_start:].masked_fill_(future, torch.finfo(torch.float32).min)
    return scores, sq_dist, inv


class _FusedGravityBlock(torch.autograd.Function):
    """Gravity attention of one block of queries with a hand-written backward (flash-attention style).

    The forward keeps nothing of size (Qb x K); the backward rebuilds the scores and probabilities once and applies
    the chain rule through softmax, the kernel, the radius gate (the soft gate's gradient for both cutoffs, i.e.
    straight-through for "hard") and d_ij^2 = |c_i|^2 + |c_j|^2 - 2 c_i . c_j:
        dL/dc_i = 2 (sum_j G_ij c_i - sum_j G_ij c_j),   dL/dc_j = 2 (sum_i G_ij c_j - sum_i G_ij c_i),   G = dL/dd^2.
    Tested against autograd through `naive_gravity_attention` on outputs and gradients.
    """

    @staticmethod
    def forward(ctx, coords_q, coords_k, values, coef_a, coef_b, mass_k, r2, self_score, key_valid, q_start, eps,
                cutoff, sharpness, dropout_p):  # fmt: skip
        scores = _block_scores(
            coords_q, coords_k, coef_a, coef_b, mass_k, r2, self_score, key_valid, q_start, eps, cutoff, sharpness
        )[0]
        probs = torch.softmax(scores, dim=-1)  # recomputed bit for bit in the backward: nothing else is kept
        del scores
        ctx.rng_state = None
        if dropout_p > 0:
            ctx.rng_state = _rng_state(probs.device)
            probs.mul_(_dropout_keep_mask(probs, dropout_p))
        out = torch.matmul(probs.to(values.dtype), values)  # (B, H, Qb, D)
        ctx.save_for_backward(coords_q, coords_k, values, coef_a, coef_b, mass_k, r2, self_score, key_valid)
        ctx.config = (q_start, eps, cutoff, sharpness, dropout_p)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        coords_q, coords_k, values, coef_a, coef_b, mass_k, r2, self_score, key_valid = ctx.saved_tensors
        q_start, eps, cutoff, sharpness, dropout_p = ctx.config
        needs = ctx.needs_input_grad
        scores, sq_dist, inv = _block_scores(
            coords_q, coords_k, coef_a, coef_b, mass_k, r2, self_score, key_valid, q_start, eps, cutoff, sharpness
        )
        probs = torch.softmax(scores, dim=-1)  # (B, H, Qb, K), before dropout
        keep = _dropout_keep_mask(probs, dropout_p, ctx.rng_state) if dropout_p > 0 else None
        grad_out = grad_out.to(values.dtype)
        grad_values = None
        if needs[2]:
            dropped = probs * keep if keep is not None else probs
            grad_values = torch.matmul(dropped.transpose(-1, -2).to(values.dtype), grad_out)
        # softmax: dS = P * (dP - rowsum(P * dP)), dP = dO V^T (times the dropout mask). rowsum(P * dP) equals
        # rowsum(dO * O) mathematically, but only this form is exactly 0 for a row with a single key (the first
        # token), where the kernel's 1 / eps would amplify any rounding.
        grad_scores = torch.matmul(grad_out, values.transpose(-1, -2)).float()
        if keep is not None:
            grad_scores.mul_(keep)
        row_dot = torch.linalg.vecdot(grad_scores, probs)[..., None]
        grad_scores.sub_(row_dot).mul_(probs)
        del probs, keep, scores
        grad_self = None
        if self_score is not None:
            diagonal = grad_scores.diagonal(offset=q_start, dim1=-2, dim2=-1)
            grad_self = diagonal.sum(dim=(0, 2)).view_as(self_score)
            diagonal.zero_()  # s_ii does not depend on the kernel then
        # kernel s_ij = m_j (a_i + b_i inv_ij): ds/da_i = m_j, ds/db_i = m_j inv_ij, ds/dm_j = a_i + b_i inv_ij.
        # The sums over keys and over (heads, queries) are matrix-vector products, not elementwise passes.
        scaled = grad_scores * inv  # dS * inv
        grad_a = grad_b = grad_mass_k = None
        if mass_k is not None:
            m_col = mass_k.transpose(-1, -2)  # (B, 1, K, 1)
            if coef_a is not None and needs[3]:
                grad_a = torch.matmul(grad_scores, m_col)
            if needs[4]:
                grad_b = torch.matmul(scaled, m_col).sum_to_size(coef_b.shape)
            if needs[5]:
                grad_mass_k = torch.matmul(coef_b.expand(*scaled.shape[:-1], 1).transpose(-1, -2), scaled)
                if coef_a is not None:
                    grad_mass_k = grad_mass_k + torch.matmul(coef_a.transpose(-1, -2), grad_scores)
                grad_mass_k = grad_mass_k.sum(dim=1, keepdim=True)  # (B, 1, 1, K)
        elif needs[4]:
            grad_b = scaled.sum(-1, keepdim=True).sum_to_size(coef_b.shape)
        # dL/dd^2 through the kernel: -b_i m_j inv_ij^2 dS
        grad_sq = scaled.mul_(inv).mul_(-coef_b)
        if mass_k is not None:
            grad_sq.mul_(mass_k)
        del inv
        grad_r2 = None
        if cutoff != "none":
            # gate = -softplus(k (d^2 / r^2 - 1)): d/dd^2 = -sigmoid(.) k / r^2, d/dr^2 = sigmoid(.) k d^2 / r^4
            weighted = torch.mul(sq_dist, sharpness / r2).sub_(sharpness).sigmoid_().mul_(grad_scores)
            if needs[6]:
                grad_r2 = torch.linalg.vecdot(weighted.flatten(), sq_dist.flatten()) * (sharpness / (r2 * r2))
            grad_sq.sub_(weighted.mul_(sharpness / r2))
            del weighted
        del grad_scores, sq_dist
        grad_sq.diagonal(offset=q_start, dim1=-2, dim2=-1).zero_()  # d_ii is a constant 0
        grad_q = grad_k = None
        if needs[0]:
            grad_q = 2.0 * (grad_sq.sum(-1, keepdim=True) * coords_q - torch.matmul(grad_sq, coords_k))
        if needs[1]:
            grad_k = 2.0 * (grad_sq.sum(-2)[..., None] * coords_k - torch.matmul(grad_sq.transpose(-1, -2), coords_q))
        return (grad_q, grad_k, grad_values, grad_a, grad_b, grad_mass_k, grad_r2, grad_self) + (None,) * 6


def _fused_block(coords_q, coords_k, mass_q, mass_k, values, gamma, beta, radius, self_score, key_valid, q_start,
                 kernel, eps, cutoff, sharpness, dropout_p, training):  # fmt: skip
    """Coefficients for `_FusedGravityBlock` (small tensors, through autograd), then the fused block."""
    num_heads = coords_q.shape[1]
    signed_gamma = gamma.view(1, num_heads, 1, 1) * (-1.0 if kernel == "repulsive" else 1.0)
    if mass_q is not None:
        m_q = mass_q[:, None, :, None]  # (B, 1, Qb, 1)
        coef_a, coef_b, m_k = beta.view(1, num_heads, 1, 1) * m_q, signed_gamma * m_q, mass_k[:, None, None, :]
    else:
        coef_a, coef_b, m_k = None, signed_gamma, None
    r2 = radius * radius if cutoff != "none" else None
    self_view = self_score.view(1, num_heads, 1, 1) if self_score is not None else None
    with torch.autocast(device_type=coords_q.device.type, enabled=False):
        return _FusedGravityBlock.apply(
            coords_q, coords_k, values, coef_a, coef_b, m_k, r2, self_view, key_valid, q_start, eps, cutoff,
            sharpness, dropout_p if training else 0.0,
        )  # fmt: skip


def _as_float(tensor):
    return None if tensor is None else tensor.float()


def chunked_gravity_attention(
    coords_q,
    coords_k,
    mass_q,
    mass_k,
    values,
    gamma,
    beta,
    radius,
    self_score,
    key_valid,
    q_start,
    *,
    kernel,
    eps,
    cutoff,
    sharpness,
    chunk_size=128,
    recompute=True,
    dropout_p=0.0,
    training=False,
):
    """Fast gravity attention (same arguments and result as `naive_gravity_attention`).

    Queries are split into blocks of `chunk_size`; block [s, e) only reads keys [0, q_start + e) (the causal
    prefix). With `recompute` (the default) each block runs as `_FusedGravityBlock`: scores are built in place,
    only the output and the row log-sum-exp are kept, and the backward pass rebuilds one block's scores at a time,
    so the peak memory is one block's (B, H, chunk, K) scores instead of all (B, H, Q, K). Without `recompute`,
    blocks run through plain autograd and keep their score matrices (more memory, the same result).
    """
    _check_kernel(kernel, cutoff)
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} is invalid: must be >= 1")
    num_queries = coords_q.shape[2]
    coords_q, coords_k = coords_q.float(), coords_k.float()
    mass_q, mass_k = _as_float(mass_q), _as_float(mass_k)
    gamma, beta, radius, self_score = _as_float(gamma), _as_float(beta), _as_float(radius), _as_float(self_score)
    block = functools.partial(
        _fused_block if recompute else _attention_block, kernel=kernel, eps=eps, cutoff=cutoff, sharpness=sharpness,
        dropout_p=dropout_p, training=training,
    )  # fmt: skip
    outputs = []
    for start in range(0, num_queries, chunk_size):
        end = min(num_queries, start + chunk_size)
        k_end = q_start + end  # keys after the block's last query are never attended
        args = (
            coords_q[:, :, start:end],
            coords_k[:, :, :k_end],
            None if mass_q is None else mass_q[:, start:end],
            None if mass_k is None else mass_k[:, :k_end],
            values[:, :, :k_end],
            gamma,
            beta,
            radius,
            self_score,
            None if key_valid is None else key_valid[:, :k_end],
            q_start + start,
        )
        outputs.append(block(*args))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)


def gravity_attention(*args, implementation="chunked", chunk_size=128, recompute=True, **kwargs):
    """Dispatcher: `"chunked"` (fast, default) or `"naive"` (reference)."""
    if implementation == "chunked":
        return chunked_gravity_attention(*args, chunk_size=chunk_size, recompute=recompute, **kwargs)
    if implementation == "naive":
        return naive_gravity_attention(*args, **kwargs)
    raise ValueError(f"implementation={implementation!r} is invalid: must be 'chunked' or 'naive'")


@torch.no_grad()
def gravity_statistics(
    coords_q, coords_k, mass_q, mass_k, gamma, beta, radius, self_score, key_valid, q_start, *, kernel, eps, cutoff,
    sharpness,
):  # fmt: skip
    """Diagnostics of one layer over the attended (causal, non-padded, off-diagonal) pairs.

    Returns float32 scalars: `mean_distance` (mean d_ij), `entropy` (mean attention entropy of valid queries, nats)
    and `sparsity` (fraction of pairs outside the radius; 0 without a cutoff).
    """
    coords_q, coords_k = coords_q.float(), coords_k.float()
    mass_q, mass_k = _as_float(mass_q), _as_float(mass_k)
    scores, sq_dist, allowed, diag = _fast_scores(
        coords_q, coords_k, mass_q, mass_k, _as_float(gamma), _as_float(beta), _as_float(radius),
        _as_float(self_score), key_valid, q_start, kernel, eps, cutoff, sharpness,
    )  # fmt: skip
    probs = torch.softmax(scores, dim=-1)
    entropy = -(probs * torch.log(probs.clamp_min(1e-30))).sum(-1)  # (B, H, Q)
    if key_valid is not None:
        query_valid = key_valid[:, q_start:][:, None, :].expand_as(entropy)
        entropy = entropy[query_valid]
    pairs = (allowed & ~diag).expand_as(sq_dist)
    distances = sq_dist.sqrt()[pairs]
    mean_distance = distances.mean() if distances.numel() else torch.zeros((), device=sq_dist.device)
    if cutoff == "none" or not distances.numel():
        sparsity = torch.zeros((), device=sq_dist.device)
    else:
        sparsity = (sq_dist[pairs] > radius.float() ** 2).float().mean()
    return {"mean_distance": mean_distance, "entropy": entropy.mean(), "sparsity": sparsity}


def repulsion_energy(coords, masses, valid=None, num_samples=0, min_dist=1e-3, generator=None):
    """Repulsion regulariser of the final-layer coordinates (mean over sampled pairs i < j).

        E = mean_{i<j} m_i m_j / max(|z_i - z_j|, min_dist)^2

    Args:
        coords: (B, L, Z) coordinates z; masses: (B, L) masses m; valid: (B, L) bool (False = padding) or None.
        num_samples: positions sampled per sequence without replacement (0 = all).
    Returns a float32 scalar (0 when no valid pair exists).
    """
    batch, length, _ = coords.shape
    coords, masses = coords.float(), masses.float()
    if valid is None:
        valid = torch.ones(batch, length, dtype=torch.bool, device=coords.device)
    if num_samples and length > num_samples:
        keys = torch.rand(batch, length, device=coords.device, generator=generator)
        keys = keys.masked_fill(~valid, -1.0)  # padding is sampled last
        index = keys.topk(num_samples, dim=1).indices  # (B, S)
        coords = coords.gather(1, index[:, :, None].expand(-1, -1, coords.shape[-1]))
        masses = masses.gather(1, index)
        valid = valid.gather(1, index)
    diff = coords[:, :, None, :] - coords[:, None, :, :]  # (B, S, S, Z)
    sq_dist = (diff * diff).sum(-1).clamp_min(min_dist**2)
    energy = masses[:, :, None] * masses[:, None, :] / sq_dist  # (B, S, S)
    size = coords.shape[1]
    upper = torch.ones(size, size, dtype=torch.bool, device=coords.device).triu(1)
    pairs = upper & valid[:, :, None] & valid[:, None, :]
    if not pairs.any():
        return coords.sum() * 0.0
    return energy[pairs].mean()


__all__ = [
    "HARD_CUTOFF_SCORE",
    "chunked_gravity_attention",
    "gravity_attention",
    "gravity_statistics",
    "naive_gravity_attention",
    "naive_gravity_scores",
    "repulsion_energy",
]
