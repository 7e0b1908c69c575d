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
import math

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


# Upper bound of the hard cutoff's step: max(d^2 + eps - (r^2 + eps), 0) clamped to it is 0 inside the radius and
# exactly _STEP outside (the expansion's d^2 values differ by at least an ulp, far above it unless r < 1e-10), so adding
# it times HARD_CUTOFF_SCORE / _STEP applies the hard cutoff without a boolean mask (masked_fill and where are several
# times slower than arithmetic on CPUs, where they do not vectorise).
_STEP = 1e-20


class _Workspace:
    """Reusable flat buffers for the blocks of one fused forward or backward pass.

    Every block needs a few (B, H, Qb, K) temporaries. Allocated afresh, each one costs a page fault per 4 KiB on
    CPUs (the C allocator hands large blocks back to the system when they are freed): about a fifth of the attention
    time at 1024 tokens. The blocks run one after another, so they share buffers sized for the largest block.
    """

    def __init__(self, batch_heads, blocks, device):
        largest = math.prod(batch_heads) * max((rows.stop - rows.start) * k_end for rows, _, k_end in blocks)
        self.capacity, self.device, self.buffers, self.futures = 4 * largest, device, {}, {}  # bytes of one block

    def future(self, size):
        """(size, size) float32: -inf strictly above the diagonal (a block's last `size` keys after its queries)."""
        if size not in self.futures:
            self.futures[size] = torch.full((size, size), float("-inf"), device=self.device).triu_(1)
        return self.futures[size]

    def get(self, name, shape, dtype=torch.float32):
        """A contiguous (shape) view of buffer `name` in `dtype` (a buffer serves float32 and bfloat16 in turn);
        its contents are whatever was written there last."""
        size = math.prod(shape) * dtype.itemsize
        flat = self.buffers.get(name)
        if flat is None or flat.numel() < size:
            flat = self.buffers[name] = torch.empty(max(size, self.capacity), dtype=torch.uint8, device=self.device)
        return flat[:size].view(dtype).view(shape)


def _block_inputs(q_aug, k_aug, coef_a, coef_b, mass_k, key_bias, rows, k_end):
    """One block's slices of the per-position tensors: its queries' rows and the keys before k_end."""
    return (
        q_aug[:, :, rows],
        k_aug[:, :, :k_end],
        None if coef_a is None else coef_a[:, :, rows],
        coef_b if mass_k is None else coef_b[:, :, rows],  # without masses b = -/+ gamma is per head only
        None if mass_k is None else mass_k[..., :k_end],
        None if key_bias is None else key_bias[..., :k_end],
    )


def _augmented_coordinates(coords_q, coords_k, eps):
    """[c_i, |c_i|^2, 1] (B, H, Q, C+2) and [-2 c_j, 1, |c_j|^2 + eps] (B, H, K, C+2): their dot product is
    d_ij^2 + eps = |c_i|^2 + |c_j|^2 - 2 c_i . c_j + eps, so one matmul gives the kernel's denominator. Differentiable
    (the fused block's backward returns gradients for these two tensors; autograd takes them to the coordinates)."""
    q_aug = torch.cat([coords_q, (coords_q * coords_q).sum(-1, keepdim=True), torch.ones_like(coords_q[..., :1])], -1)
    k_norm = (coords_k * coords_k).sum(-1, keepdim=True) + eps
    return q_aug, torch.cat([-2.0 * coords_k, torch.ones_like(coords_k[..., :1]), k_norm], -1)


def _gate_argument(dist, r2, eps, sharpness, out):
    """k (d^2 / r^2 - 1) from dist = d^2 + eps, into `out`: dist * k / r^2 - k (1 + eps / r^2)."""
    return torch.mul(dist, sharpness / r2, out=out).sub_(sharpness * (1.0 + eps / r2))


def _block_scores(q_aug, k_aug, coef_a, coef_b, mass_k, key_bias, r2, self_score, q_start, eps, cutoff, sharpness,
                  workspace, keep_dist):  # fmt: skip
    """Scores of one block of queries, built in place without autograd (the fused path's forward and recompute).

    s_ij = m_j (a_i + b_i / (d_ij^2 + eps)) + gate_r(d_ij^2), where a_i = beta m_i and b_i = -/+ gamma m_i (or
    a = None, b = -/+ gamma and no m_j when masses are not in the score). Keys are timeline positions
    0..q_start+Qb-1, query i sits at q_start + i. Excluded pairs (future keys, padded keys `key_bias` = -inf) hold
    -inf. Returns (scores, dist), (B, H, Qb, K) float32 views of the workspace's "scores" and "dist" buffers,
    dist = d^2 + eps; without `keep_dist` (the forward) the cutoff overwrites dist, otherwise it uses the "gate"
    buffer. The forward and the backward compute the scores with the same operations, so a row with a single key
    gets probability exactly 1 in both.
    """
    shape = (*q_aug.shape[:3], k_aug.shape[2])  # (B, H, Qb, K)
    num_queries = shape[2]
    dist = torch.matmul(q_aug, k_aug.transpose(-1, -2), out=workspace.get("dist", shape))  # d^2 + eps
    dist.clamp_(min=eps)  # rounding can take the expansion below d^2 = 0
    dist.diagonal(offset=q_start, dim1=-2, dim2=-1).fill_(eps)  # d_ii = 0 exactly
    # One broadcast operand per operation: CPU kernels vectorise only then (addcdiv(a, b, dist) runs 2.5x slower).
    scores = torch.div(coef_b, dist, out=workspace.get("scores", shape))
    if coef_a is not None:
        scores.add_(coef_a)
    if mass_k is not None:
        scores.mul_(mass_k)
    gate = workspace.get("gate", shape) if keep_dist else dist
    if cutoff == "hard":
        outside = torch.sub(dist, r2 + eps, out=gate).clamp_(0.0, _STEP)
        scores.add_(outside, alpha=HARD_CUTOFF_SCORE / _STEP)
    elif cutoff == "soft":
        scores.sub_(F.softplus(_gate_argument(dist, r2, eps, sharpness, gate)))
    diagonal = scores.diagonal(offset=q_start, dim1=-2, dim2=-1)  # (B, H, Qb) view of s_ii
    if self_score is not None:
        diagonal.copy_(self_score.view(1, -1, 1).expand_as(diagonal))
    if key_bias is not None:
        kept = diagonal.clone()  # a padded query still sees itself
        scores.add_(key_bias)
        diagonal.copy_(kept)
    if num_queries > 1:  # causal: only the last Qb keys can lie after a query (the strict upper triangle there)
        scores[..., q_start:].add_(workspace.future(num_queries))
    return scores, dist


def _times_masses(matrix, mass_k):
    """sum_j matrix_ij m_j: (B, H, Qb, K), (B, 1, 1, K) -> (B, H, Qb, 1). One matrix-vector product per sequence:
    batched matmul with a single column is about 15x slower on CPUs, an elementwise product and sum about 2.5x."""
    batch, heads, queries, keys = matrix.shape
    rows = [torch.mv(matrix[i].reshape(heads * queries, keys), mass_k[i].reshape(keys)) for i in range(batch)]
    return torch.stack(rows).view(batch, heads, queries, 1)


# Size of one block's (B, H, Qb, K) float32 matrices on CPUs (4 MiB): a pass keeps two to four of them, which then
# stay in the last-level cache. Blocks twice as large ran 1.2-1.3x slower at 256 and 1024 tokens (AVX-512 CPU), four
# times as large 1.6x; blocks a quarter as large pay per-operation overhead.
_CPU_BLOCK_ELEMENTS = 1 << 20
_MIN_BLOCK_ROWS = 16


def _block_rows(chunk_size, batch_heads, num_keys, device):
    """Queries per block: `chunk_size`, fewer on CPUs where a block's matrices would outgrow the cache budget."""
    if device.type != "cpu":
        return chunk_size
    return min(chunk_size, max(_MIN_BLOCK_ROWS, _CPU_BLOCK_ELEMENTS // (batch_heads * num_keys)))


def _blocks(num_queries, q_start, chunk_size):
    """(rows, first query position, k_end) of every block: queries [s, e) see keys [0, q_start + e) (the causal
    prefix; later keys are never attended)."""
    return [
        (slice(s, min(num_queries, s + chunk_size)), q_start + s, q_start + min(num_queries, s + chunk_size))
        for s in range(0, num_queries, chunk_size)
    ]


def _fused_forward(q_aug, k_aug, values, coef_a, coef_b, mass_k, r2, self_score, key_bias, q_start, eps, cutoff,
                   sharpness, dropout_p, chunk_size):  # fmt: skip
    """The blocks' outputs (B, H, Q, D) and the RNG state before each block's dropout mask (for the backward)."""
    blocks = _blocks(q_aug.shape[2], q_start, chunk_size)
    workspace = _Workspace(q_aug.shape[:2], blocks, q_aug.device)
    out = values.new_empty(*q_aug.shape[:3], values.shape[-1])
    rng_states = []
    for rows, first, k_end in blocks:
        block = _block_inputs(q_aug, k_aug, coef_a, coef_b, mass_k, key_bias, rows, k_end)
        scores, dist = _block_scores(*block, r2, self_score, first, eps, cutoff, sharpness, workspace, False)
        # recomputed bit for bit in the backward: nothing else is kept. Two buffers serve the block: the
        # probabilities go where dist was, their bf16 copy (under autocast) where the scores were.
        probs = torch.softmax(scores, dim=-1, out=dist)
        if dropout_p > 0:
            rng_states.append(_rng_state(probs.device))
            probs.mul_(_dropout_keep_mask(probs, dropout_p))
        if values.dtype != probs.dtype:  # bf16 values under autocast: the product runs in their dtype
            probs = workspace.get("scores", probs.shape, values.dtype).copy_(probs)
        if len(blocks) == 1:
            return torch.matmul(probs, values[:, :, :k_end]), rng_states
        out[:, :, rows] = torch.matmul(probs, values[:, :, :k_end])
    return out, rng_states


class _FusedGravityAttention(torch.autograd.Function):
    """Gravity attention, block by block, with a hand-written backward (flash-attention style).

    The forward keeps nothing of size (Q x K); the backward rebuilds each block's scores and probabilities once and
    applies the chain rule through softmax (dS = P (dP - rowsum(P dP))), the kernel s = m_j (a_i + b_i / dist), the
    radius gate (the soft gate's gradient for both cutoffs, i.e. straight-through for "hard") and
    dist = d^2 + eps = q_aug . k_aug:
        dL/da_i = sum_j dS m_j,   dL/db_i = sum_j dS m_j / dist,   dL/dm_j = sum_{h,i} dS (a_i + b_i / dist),
        G = dL/d dist = -b_i m_j dS / dist^2 - (k / r^2) sigmoid(k (d^2 / r^2 - 1)) dS,
        dL/dq_aug = G k_aug,   dL/dk_aug = G^T q_aug.
    Sums over keys or queries are matrix products, not elementwise passes; every (Qb x K) temporary lives in a
    workspace buffer shared by the blocks; gradients of the keys and values are accumulated in place. Tested against
    autograd through `naive_gravity_attention` on outputs and gradients.
    """

    @staticmethod
    def forward(ctx, q_aug, k_aug, values, coef_a, coef_b, mass_k, r2, self_score, key_bias, q_start, eps, cutoff,
                sharpness, dropout_p, chunk_size):  # fmt: skip
        out, ctx.rng_states = _fused_forward(
            q_aug, k_aug, values, coef_a, coef_b, mass_k, r2, self_score, key_bias, q_start, eps, cutoff, sharpness,
            dropout_p, chunk_size,
        )  # fmt: skip
        ctx.save_for_backward(q_aug, k_aug, values, coef_a, coef_b, mass_k, r2, self_score, key_bias)
        ctx.config = (q_start, eps, cutoff, sharpness, dropout_p, chunk_size)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q_aug, k_aug, values, coef_a, coef_b, mass_k, r2, self_score, key_bias = ctx.saved_tensors
        q_start, eps, cutoff, sharpness, dropout_p, chunk_size = ctx.config
        needs = ctx.needs_input_grad
        blocks = _blocks(q_aug.shape[2], q_start, chunk_size)
        workspace = _Workspace(q_aug.shape[:2], blocks, q_aug.device)
        grad_out = grad_out.to(values.dtype)
        low = values.dtype != torch.float32
        # Gradients: query-side ones are written block by block, key-side ones accumulated (in float32, transposed
        # so that each block adds a contiguous slab).
        batch, heads, num_keys = k_aug.shape[:3]
        grad_q = torch.empty_like(q_aug) if needs[0] else None
        grad_k_t = k_aug.new_zeros(batch, heads, k_aug.shape[-1], num_keys) if needs[1] else None
        grad_v_t = k_aug.new_zeros(batch, heads, values.shape[-1], num_keys) if needs[2] else None
        grad_a = torch.empty_like(coef_a) if coef_a is not None and needs[3] else None
        grad_b = (torch.empty_like(coef_b) if mass_k is not None else torch.zeros_like(coef_b)) if needs[4] else None
        grad_mass_k = torch.zeros_like(mass_k) if mass_k is not None and needs[5] else None
        grad_r2 = torch.zeros_like(r2) if r2 is not None and needs[6] else None
        grad_self = torch.zeros_like(self_score) if self_score is not None and needs[7] else None
        need_dist = needs[0] or needs[1] or needs[6]
        for index in reversed(range(len(blocks))):  # the largest block first: the workspace is sized once
            rows, first, k_end = blocks[index]
            block = _block_inputs(q_aug, k_aug, coef_a, coef_b, mass_k, key_bias, rows, k_end)
            q_blk, k_blk, a_blk, b_blk, m_blk = block[:5]
            scores, dist = _block_scores(*block, r2, self_score, first, eps, cutoff, sharpness, workspace, True)
            shape = scores.shape
            probs = torch.softmax(scores, dim=-1, out=workspace.get("probs", shape))  # before dropout
            keep = _dropout_keep_mask(probs, dropout_p, ctx.rng_states[index]) if dropout_p > 0 else None
            d_out, v_blk = grad_out[:, :, rows], values[:, :, :k_end]
            if grad_v_t is not None:
                dropped = probs * keep if keep is not None else probs
                if low:
                    dropped = workspace.get("gate", shape, values.dtype).copy_(dropped)  # the gate buffer is free
                # dO^T P: the product with the long dimension last runs about 1.6x faster than P^T dO on CPUs
                grad_v_t[..., :k_end] += torch.matmul(d_out.transpose(-1, -2), dropped)
                del dropped
            # softmax: dS = P * (dP - rowsum(P * dP)), dP = dO V^T (times the dropout mask), computed as
            # P dP - P rowsum(P dP) in the scores' buffer (no longer needed). rowsum(P * dP) equals rowsum(dO * O)
            # mathematically, but only this form is exactly 0 for a row with a single key (the first token), where
            # the kernel's 1 / eps would amplify any rounding.
            if low:
                grad_low = torch.matmul(d_out, v_blk.transpose(-1, -2), out=workspace.get("gate", shape, values.dtype))
                grad_scores = scores.copy_(grad_low)
                del grad_low
            else:
                grad_scores = torch.matmul(d_out, v_blk.transpose(-1, -2), out=scores)
            if keep is not None:
                grad_scores.mul_(keep)
            del keep
            grad_scores.mul_(probs)
            grad_scores.addcmul_(probs, grad_scores.sum(-1, keepdim=True), value=-1.0)
            if self_score is not None:
                diagonal = grad_scores.diagonal(offset=first, dim1=-2, dim2=-1)
                if grad_self is not None:
                    grad_self += diagonal.sum(dim=(0, 2)).view_as(self_score)
                diagonal.zero_()  # s_ii does not depend on the kernel then
            per_dist = torch.div(grad_scores, dist, out=probs)  # dS / dist, in the probabilities' buffer
            del probs
            if m_blk is not None:
                if grad_a is not None:
                    grad_a[:, :, rows] = _times_masses(grad_scores, m_blk)
                if grad_b is not None:
                    grad_b[:, :, rows] = _times_masses(per_dist, m_blk)
                if grad_mass_k is not None:  # sums over queries: (1, Qb) x (Qb, K) products, then over heads
                    grad_m = torch.matmul(b_blk.transpose(-1, -2), per_dist)
                    if a_blk is not None:
                        grad_m += torch.matmul(a_blk.transpose(-1, -2), grad_scores)
                    grad_mass_k[..., :k_end] += grad_m.sum(dim=1, keepdim=True)
            elif grad_b is not None:
                grad_b += per_dist.sum(-1, keepdim=True).sum_to_size(coef_b.shape)
            if need_dist:
                grad_dist = per_dist.div_(dist).mul_(-b_blk)  # through the kernel: -b_i m_j dS / dist^2
                if m_blk is not None:
                    grad_dist.mul_(m_blk)
                if cutoff != "none":
                    # gate = -softplus(k (d^2 / r^2 - 1)): d/dd^2 = -sigmoid(.) k / r^2, d/dr^2 = sigmoid(.) k d^2 / r^4
                    weighted = _gate_argument(dist, r2, eps, sharpness, workspace.get("gate", shape))
                    weighted.sigmoid_().mul_(grad_scores)
                    if grad_r2 is not None:  # d^2 = dist - eps
                        weighted_dist = torch.dot(weighted.view(-1), dist.view(-1)) - eps * weighted.sum()
                        grad_r2 += weighted_dist * (sharpness / (r2 * r2))
                    grad_dist.addcmul_(weighted, -sharpness / r2)
                    del weighted
                grad_dist.diagonal(offset=first, dim1=-2, dim2=-1).zero_()  # d_ii is a constant 0
                if grad_q is not None:
                    grad_q[:, :, rows] = torch.matmul(grad_dist, k_blk)
                if grad_k_t is not None:  # q_aug^T G, faster than G^T q_aug for the same reason as above
                    grad_k_t[..., :k_end] += torch.matmul(q_blk.transpose(-1, -2), grad_dist)
            del per_dist, grad_scores, dist, scores
        grad_k = None if grad_k_t is None else grad_k_t.transpose(-1, -2)
        grad_values = None if grad_v_t is None else grad_v_t.transpose(-1, -2).to(values.dtype)
        return (grad_q, grad_k, grad_values, grad_a, grad_b, grad_mass_k, grad_r2, grad_self) + (None,) * 7


def _fused_attention(coords_q, coords_k, mass_q, mass_k, values, gamma, beta, radius, self_score, key_valid, q_start,
                     kernel, eps, cutoff, sharpness, dropout_p, chunk_size):  # fmt: skip
    """`_FusedGravityAttention` on the small per-position tensors (augmented coordinates, kernel coefficients,
    masses, key bias), built here through autograd."""
    num_heads = coords_q.shape[1]
    q_aug, k_aug = _augmented_coordinates(coords_q, coords_k, eps)
    signed_gamma = gamma.view(1, num_heads, 1, 1) * (-1.0 if kernel == "repulsive" else 1.0)
    if mass_q is not None:
        m_q = mass_q[:, None, :, None]  # (B, 1, Q, 1)
        coef_a, coef_b, m_k = beta.view(1, num_heads, 1, 1) * m_q, signed_gamma * m_q, mass_k[:, None, None, :]
    else:
        coef_a, coef_b, m_k = None, signed_gamma, None
    r2 = radius * radius if cutoff != "none" else None
    self_view = self_score.view(1, num_heads, 1, 1) if self_score is not None else None
    key_bias = None
    if key_valid is not None:  # (B, 1, 1, K): -inf on padded keys, added to the scores (faster than masked_fill)
        key_bias = torch.zeros(key_valid.shape, device=coords_q.device).masked_fill_(~key_valid, float("-inf"))
        key_bias = key_bias[:, None, None, :]
    batch, _, num_queries = coords_q.shape[:3]
    rows = _block_rows(chunk_size, batch * num_heads, q_start + num_queries, coords_q.device)
    inputs = (q_aug, k_aug, values, coef_a, coef_b, m_k, r2, self_view, key_bias)
    with torch.autocast(device_type=coords_q.device.type, enabled=False):
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
            return _FusedGravityAttention.apply(*inputs, q_start, eps, cutoff, sharpness, dropout_p, rows)
        # inference (generation): the same blocks without the autograd function's bookkeeping
        return _fused_forward(*inputs, q_start, eps, cutoff, sharpness, dropout_p, rows)[0]


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

    Queries are split into blocks of `chunk_size` (fewer on CPUs when a block's (B, H, chunk, K) matrices would
    exceed 2^20 elements); block [s, e) only reads keys [0, q_start + e) (the causal prefix). With `recompute` (the default) the blocks run in `_FusedGravityAttention`: scores are built in
    reused buffers, only the output is kept, and the backward pass rebuilds one block's scores at a time, so the
    peak memory is a few of one block's (B, H, chunk, K) matrices instead of all (B, H, Q, K). Without `recompute`,
    blocks run through plain autograd and keep their score matrices (more memory, the same result).
    """
    _check_kernel(kernel, cutoff)
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} is invalid: must be >= 1")
    num_queries = coords_q.shape[2]
    coords_q, coords_k = coords_q.float(), coords_k.float()
    mass_q, mass_k = _as_float(mass_q), _as_float(mass_k)
    gamma, beta, radius, self_score = _as_float(gamma), _as_float(beta), _as_float(radius), _as_float(self_score)
    if recompute:
        return _fused_attention(
            coords_q, coords_k, mass_q, mass_k, values, gamma, beta, radius, self_score, key_valid, q_start, kernel,
            eps, cutoff, sharpness, dropout_p if training else 0.0, chunk_size,
        )  # fmt: skip
    block = functools.partial(
        _attention_block, kernel=kernel, eps=eps, cutoff=cutoff, sharpness=sharpness, dropout_p=dropout_p,
        training=training,
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
