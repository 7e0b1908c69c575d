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

The fast path uses d_ij^2 = |c_i|^2 + |c_j|^2 - 2 c_i . c_j (a matmul, in float32): the (B, H, Q, K, C) difference
tensor of the reference is never built. Queries are processed in blocks; a block only sees the keys up to its last
query, and in training it is recomputed in the backward pass, so only one block of (Q x K) scores is alive at once.
"""

import functools

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


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


def _fast_scores(
    coords_q, coords_k, sq_norm_k, mass_q, mass_k, gamma, beta, radius, self_score, key_valid, q_start, kernel, eps,
    cutoff, sharpness,
):  # fmt: skip
    """Same scores as `naive_gravity_scores`, from matmuls; all inputs already float32, sq_norm_k = |c_j|^2 (B,H,1,K)."""
    batch, num_heads, num_queries, coord_size = coords_q.shape
    num_keys = coords_k.shape[2]
    sq_norm_q = (coords_q * coords_q).sum(-1, keepdim=True)  # (B, H, Q, 1)
    # d^2 = |c_i|^2 + |c_j|^2 - 2 c_i . c_j, one batched matmul: (BH, Q, C) x (BH, C, K) -> (BH, Q, K)
    sq_dist = torch.baddbmm(
        (sq_norm_q + sq_norm_k).reshape(batch * num_heads, num_queries, num_keys),
        coords_q.reshape(batch * num_heads, num_queries, coord_size),
        coords_k.reshape(batch * num_heads, num_keys, coord_size).transpose(1, 2),
        alpha=-2.0,
    ).view(batch, num_heads, num_queries, num_keys)
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
    coords_q, coords_k, sq_norm_k, mass_q, mass_k, values, gamma, beta, radius, self_score, key_valid, q_start,
    kernel, eps, cutoff, sharpness, dropout_p, training,
):  # fmt: skip
    """One block of queries: (B, H, Qb, D) output."""
    with torch.autocast(device_type=coords_q.device.type, enabled=False):
        scores = _fast_scores(
            coords_q, coords_k, sq_norm_k, mass_q, mass_k, gamma, beta, radius, self_score, key_valid, q_start,
            kernel, eps, cutoff, sharpness,
        )[0]  # fmt: skip
        probs = torch.softmax(scores, dim=-1)
    probs = F.dropout(probs, p=dropout_p, training=training)
    return torch.matmul(probs.to(values.dtype), values)


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
    prefix). With `recompute` and gradients enabled each block is checkpointed: its scores are rebuilt in the
    backward pass, so the peak memory is one block's (B, H, chunk, K) scores instead of all (B, H, Q, K).
    """
    _check_kernel(kernel, cutoff)
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} is invalid: must be >= 1")
    num_queries = coords_q.shape[2]
    coords_q, coords_k = coords_q.float(), coords_k.float()
    mass_q, mass_k = _as_float(mass_q), _as_float(mass_k)
    gamma, beta, radius, self_score = _as_float(gamma), _as_float(beta), _as_float(radius), _as_float(self_score)
    sq_norm_k = (coords_k * coords_k).sum(-1)[:, :, None, :]  # (B, H, 1, K)
    block = functools.partial(
        _attention_block, kernel=kernel, eps=eps, cutoff=cutoff, sharpness=sharpness, dropout_p=dropout_p,
        training=training,
    )  # fmt: skip
    use_checkpoint = recompute and torch.is_grad_enabled() and num_queries > 1
    outputs = []
    for start in range(0, num_queries, chunk_size):
        end = min(num_queries, start + chunk_size)
        k_end = q_start + end  # keys after the block's last query are never attended
        args = (
            coords_q[:, :, start:end],
            coords_k[:, :, :k_end],
            sq_norm_k[..., :k_end],
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
        if use_checkpoint:
            outputs.append(checkpoint(block, *args, use_reentrant=False))
        else:
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
    sq_norm_k = (coords_k * coords_k).sum(-1)[:, :, None, :]
    scores, sq_dist, allowed, diag = _fast_scores(
        coords_q, coords_k, sq_norm_k, mass_q, mass_k, _as_float(gamma), _as_float(beta), _as_float(radius),
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
