"""Hyper-connection math for mHC (arXiv 2512.24880) and HC (arXiv 2409.19606): the coefficients and the stream mixing.

`naive_*` functions are the readable references (loops, one equation per line); the functions without the prefix are
the ones the models run, tested against them on outputs and gradients.

Dimension letters: ... any leading dims (batch, tokens), n streams, C stream width, K = 2n + n^2 coefficients.
Convention: streams x (..., n, C); H_pre (..., n); H_post (..., n); H_res (..., n, n) with
    layer input   h        = sum_i H_pre[i] x_i
    next streams  x'_i     = sum_j H_res[i, j] x_j + H_post[i] F(h)
"""

import math

import torch
from torch.nn import functional as F


def naive_sinkhorn_knopp(logits, iterations):
    """Sinkhorn-Knopp projection of exp(logits) (..., n, n) onto the doubly-stochastic matrices, entry by entry.

    M^(0) = exp(H~); then `iterations` times: divide every column by its sum, then every row by its sum.
    """
    flat = logits.reshape(-1, logits.shape[-2], logits.shape[-1])
    out = []
    for matrix in flat:
        n = matrix.shape[0]
        m = [[torch.exp(matrix[i, j]) for j in range(n)] for i in range(n)]
        for _ in range(iterations):
            columns = [sum(m[i][j] for i in range(n)) for j in range(n)]
            m = [[m[i][j] / columns[j] for j in range(n)] for i in range(n)]
            rows = [sum(m[i][j] for j in range(n)) for i in range(n)]
            m = [[m[i][j] / rows[i] for j in range(n)] for i in range(n)]
        out.append(torch.stack([torch.stack(row) for row in m]))
    return torch.stack(out).reshape(logits.shape)


class _SinkhornKnopp(torch.autograd.Function):
    """Sinkhorn-Knopp with a hand-written backward. The matrices are laid out as (n, n, M) with the M matrices last,
    so every normalisation is a few long vectorised passes instead of M reductions over n = 4 entries. The forward
    keeps only the final matrices and the 2 t_max normalising sums; the backward walks the iterations in reverse,
    rebuilding each intermediate from the next one and its sum (x = y * s); the gradient of y = x / sum(x) is
    (g - sum(g y)) / sum(x). Autograd through the loop would keep 2 t_max full matrices and run twice the kernels."""

    @staticmethod
    def forward(ctx, logits, iterations):
        shape, n = logits.shape, logits.shape[-1]
        tiny = torch.finfo(logits.dtype).tiny
        z = logits.reshape(-1, n, n).permute(1, 2, 0).contiguous()  # (n rows, n columns, M)
        m = torch.exp(z - z.amax(dim=(0, 1), keepdim=True))
        sums = []
        for _ in range(iterations):
            column = m.sum(dim=0, keepdim=True).clamp_min_(tiny)  # (1, n, M)
            m = m / column
            row = m.sum(dim=1, keepdim=True).clamp_min_(tiny)  # (n, 1, M)
            m.div_(row)
            sums += [column, row]
        ctx.save_for_backward(m, *sums)
        ctx.shape = shape
        return m.permute(2, 0, 1).reshape(shape).contiguous()

    @staticmethod
    def backward(ctx, grad):
        y, *sums = ctx.saved_tensors
        n = y.shape[0]
        grad = grad.reshape(-1, n, n).permute(1, 2, 0).contiguous()
        for index in range(len(sums) - 1, -1, -2):
            column, row = sums[index - 1], sums[index]
            grad = (grad - (grad * y).sum(dim=1, keepdim=True)) / row  # through y = a / rowsum(a)
            y = y * row  # a
            grad = (grad - (grad * y).sum(dim=0, keepdim=True)) / column  # through a = m / colsum(m)
            y = y * column  # m of the previous iteration
        # y is now exp(logits - max); the shift cancels in the normalisations
        return (grad * y).permute(2, 0, 1).reshape(ctx.shape).contiguous(), None


def sinkhorn_knopp(logits, iterations):
    """`naive_sinkhorn_knopp`, vectorised, with a memory-lean hand-written backward. The per-matrix maximum is
    subtracted before exp (Sinkhorn is invariant to scaling the matrix) so large logits cannot overflow; a floor on
    the sums keeps an underflowed column finite."""
    return _SinkhornKnopp.apply(logits, iterations)


def naive_mhc_coefficients(streams, phi, bias, gate, iterations, eps, dynamic=True):
    """mHC coefficients, as the paper writes them.

    x' = RMSNorm(vec(x)) (1 x nC, no affine weight)
    H~_pre = alpha_pre (x' phi_pre) + b_pre,  H~_post = alpha_post (x' phi_post) + b_post,
    H~_res = alpha_res mat(x' phi_res) + b_res
    H_pre = sigmoid(H~_pre),  H_post = 2 sigmoid(H~_post),  H_res = Sinkhorn-Knopp(exp(H~_res))

    Args: streams (..., n, C); phi (K, nC) (None when not `dynamic`); bias (K,); gate (3,) = alpha_pre, alpha_post,
    alpha_res (None when not `dynamic`). Returns H_pre (..., n), H_post (..., n), H_res (..., n, n).
    """
    n = streams.shape[-2]
    b_pre, b_post, b_res = bias[:n], bias[n : 2 * n], bias[2 * n :].reshape(n, n)
    if dynamic:
        x = streams.flatten(-2)  # (..., nC)
        x_normed = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        projected = x_normed @ phi.T  # (..., K)
        pre_raw, post_raw = projected[..., :n], projected[..., n : 2 * n]
        res_raw = projected[..., 2 * n :].reshape(*projected.shape[:-1], n, n)
        pre_tilde = gate[0] * pre_raw + b_pre
        post_tilde = gate[1] * post_raw + b_post
        res_tilde = gate[2] * res_raw + b_res
    else:
        lead = streams.shape[:-2]
        pre_tilde, post_tilde, res_tilde = b_pre.expand(*lead, n), b_post.expand(*lead, n), b_res.expand(*lead, n, n)
    return torch.sigmoid(pre_tilde), 2 * torch.sigmoid(post_tilde), naive_sinkhorn_knopp(res_tilde, iterations)


def project_float32(x, phi):
    """x phi^T for the coefficients, in float32 under autocast too (autocast would run the matmul in half precision,
    and Sinkhorn exponentiates what comes out)."""
    with torch.autocast(x.device.type, enabled=False):
        return x.float() @ phi.float().T


def mhc_coefficients(streams, phi, bias, gate, iterations, eps, dynamic=True, sinkhorn=None):
    """`naive_mhc_coefficients` with one fused projection: the RMSNorm is a per-token scalar, so it is applied after
    the (..., nC) x (nC, K) matmul instead of to the wide input, and the three gates scale the K outputs at once.
    `sinkhorn` is the projection to use (default `sinkhorn_knopp`; `mhc_read` passes `plain_sinkhorn_knopp`)."""
    n = streams.shape[-2]
    if dynamic:
        x = streams.flatten(-2).float()  # the coefficients are computed in float32 (under autocast too)
        # one fused pass for the mean square (x.pow(2).mean() would materialise x^2 in both directions)
        inv_rms = torch.rsqrt(torch.linalg.vector_norm(x, dim=-1, keepdim=True).square() / x.shape[-1] + eps)
        gates = torch.cat([gate[0].expand(n), gate[1].expand(n), gate[2].expand(n * n)]).float()
        tilde = project_float32(x, phi) * inv_rms * gates + bias.float()  # (..., K)
    else:
        tilde = bias.float().expand(*streams.shape[:-2], bias.shape[0])
    pre = torch.sigmoid(tilde[..., :n])
    post = 2 * torch.sigmoid(tilde[..., n : 2 * n])
    res = (sinkhorn or sinkhorn_knopp)(tilde[..., 2 * n :].unflatten(-1, (n, n)), iterations)
    return pre, post, res


def plain_sinkhorn_knopp(logits, iterations):
    """`sinkhorn_knopp` in plain vectorised ops with autograd's own backward: the form `torch.compile` fuses (the
    hand-written backward of `sinkhorn_knopp` is for eager execution)."""
    tiny = torch.finfo(logits.dtype).tiny
    m = torch.exp(logits - logits.amax(dim=(-2, -1), keepdim=True))
    for _ in range(iterations):
        m = m / m.sum(dim=-2, keepdim=True).clamp_min(tiny)
        m = m / m.sum(dim=-1, keepdim=True).clamp_min(tiny)
    return m


def mhc_read(streams, phi, bias, gate, iterations, eps):
    """The first half of an mHC hyper-connection as one function for `torch.compile`: the dynamic coefficients
    (`mhc_coefficients`) and the layer input h = sum_i H_pre[i] x_i (`collapse`), in plain ops.
    Returns h (..., C), H_post (..., n), H_res (..., n, n)."""
    pre, post, res = mhc_coefficients(streams, phi, bias, gate, iterations, eps, sinkhorn=plain_sinkhorn_knopp)
    h = (pre.to(streams.dtype).unsqueeze(-1) * streams).sum(-2)  # the collapse as a broadcast sum, which fuses
    return h, post, res


def mhc_write(streams, res, post, output):
    """The second half as one function for `torch.compile`: `expand` in plain ops (broadcast and sum)."""
    dtype = streams.dtype
    mixed = (res.to(dtype).unsqueeze(-1) * streams.unsqueeze(-3)).sum(-2)
    return mixed + post.to(dtype).unsqueeze(-1) * output.unsqueeze(-2)


class _FusedRead(torch.autograd.Function):
    """The first half of an mHC hyper-connection on the fused CPU kernels (`kernels_mhc`), and the backward of both
    halves but dL/dF(h).

    The backward of the stream update (`_FusedWrite`) needs only dL/dF(h) before F's own backward runs; the rest of
    it (dL/dx through H_res, dL/dH_res, dL/dH_post) is computed here, in the same pass over the tokens as this half's
    own backward, from dL/dx' and F(h) that `_FusedWrite.backward` leaves in the shared `link`. That saves writing and
    reading back a (B, T, n, C) gradient per hyper-connection. The order is guaranteed: this backward consumes the
    gradient of H_post, which `_FusedWrite.backward` produces. Gradients of h, H_post and H_res arriving from any
    other use are added as usual."""

    @staticmethod
    def forward(ctx, streams, phi, bias, gate, iterations, eps, kernels, link):
        *lead, n, C = streams.shape
        x = streams.reshape(-1, n, C)  # (M, n, C)
        with torch.autocast(streams.device.type, enabled=False):  # the coefficients stay in the stream dtype
            h, post, res, proj, tilde, inv_rms = kernels.read_forward(x, phi.to(x.dtype), bias, gate, iterations, eps)
        ctx.save_for_backward(x, phi, gate, res, proj, tilde, inv_rms)
        ctx.iterations, ctx.kernels, ctx.shape, ctx.link = iterations, kernels, streams.shape, link
        return h.view(*lead, C), post.view(*lead, n), res.view(*lead, n, n)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h, grad_post, grad_res):
        x, phi, gate, res, proj, tilde, inv_rms = ctx.saved_tensors
        M, n, C = x.shape

        def flat(grad, *shape):
            return x.new_zeros(shape) if grad is None else grad.reshape(shape).to(x.dtype).contiguous()

        grad_streams, output = ctx.link.pop("update", (x.new_empty(0), x.new_empty(0)))
        dx, dtilde, grad_phi = ctx.kernels.read_backward(
            grad_streams, output, flat(grad_h, M, C), flat(grad_post, M, n), flat(grad_res, M, n, n),
            x, phi.to(x.dtype), res, proj, tilde, inv_rms, gate, ctx.iterations,
        )  # fmt: skip
        per_k = (dtilde * proj * inv_rms.unsqueeze(-1)).sum(0)  # d tilde_k / d gate(k) = proj_k * inv_rms
        grad_gate = torch.stack([per_k[:n].sum(), per_k[n : 2 * n].sum(), per_k[2 * n :].sum()]).to(gate.dtype)
        grads = (dx.view(ctx.shape), grad_phi.to(phi.dtype), dtilde.sum(0).to(phi.dtype), grad_gate)
        return grads + (None,) * 4


class _FusedWrite(torch.autograd.Function):
    """The stream update x'_i = sum_j H_res[i, j] x_j + H_post[i] F(h) on the fused CPU kernels. Its backward
    computes dL/dF(h) and hands dL/dx' and F(h) to `_FusedRead.backward` (through `link`), which adds this function's
    gradients for x, H_res and H_post; so it returns none for them here (a zero one for H_post, which makes autograd
    run `_FusedRead.backward` even when nothing else reaches it)."""

    @staticmethod
    def forward(ctx, streams, res, post, output, kernels, link):
        *lead, n, C = streams.shape
        x = streams.reshape(-1, n, C)
        out = output.reshape(-1, C).to(x.dtype).contiguous()
        res, post = res.reshape(-1, n, n).contiguous(), post.reshape(-1, n).contiguous()
        ctx.save_for_backward(post, out)
        ctx.kernels, ctx.output_dtype, ctx.link = kernels, output.dtype, link
        return kernels.write_forward(x, res, post, out).view(streams.shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        post, out = ctx.saved_tensors
        *lead, n, C = grad.shape
        grad = grad.reshape(-1, n, C).to(out.dtype).contiguous()
        ctx.link["update"] = (grad, out)
        dout = ctx.kernels.write_backward(grad, post).view(*lead, C).to(ctx.output_dtype)
        return None, None, post.new_zeros(*lead, n), dout, None, None


def fused_mhc_read(streams, phi, bias, gate, iterations, eps, kernels):
    """`mhc_read` on the fused CPU kernels (`kernels` = `kernels_mhc.load()`): streams (..., n, C), float32 or
    float64 on the CPU -> h (..., C), H_post (..., n), H_res (..., n, n), and the link to pass to `fused_mhc_write`
    (the two halves share their backward)."""
    link = {}
    return (*_FusedRead.apply(streams.contiguous(), phi, bias, gate, iterations, eps, kernels, link), link)


def fused_mhc_write(streams, res, post, output, kernels, link):
    """`expand` on the fused CPU kernels: x'_i = sum_j H_res[i, j] x_j + H_post[i] F(h), for the `link` that
    `fused_mhc_read` returned with H_res and H_post from the same streams."""
    return _FusedWrite.apply(streams.contiguous(), res, post, output, kernels, link)


_COMPILED = {}


def compiled(function):
    """`torch.compile(function)`, made once per process on first use."""
    if function not in _COMPILED:
        _COMPILED[function] = torch.compile(function)
    return _COMPILED[function]


def hc_coefficients(streams, phi, bias, gate, eps, dynamic=True):
    """Original Hyper-Connections (arXiv 2409.19606), unconstrained, for ablation.

    Each stream is RMS-normalised on its own (x_bar_i); one projection W (2 + n, C) gives per stream i the dynamic
    parts tanh(x_bar_i W): H_pre[i] = b_pre[i] + alpha_pre t_i0, H_post[i] = b_post[i] + alpha_post t_i1,
    H_res[i, :] = b_res[i, :] + alpha_res t_i2..
    Args as `mhc_coefficients` with phi (2 + n, C).
    """
    n = streams.shape[-2]
    b_pre, b_post, b_res = bias[:n], bias[n : 2 * n], bias[2 * n :].reshape(n, n)
    if not dynamic:
        lead = streams.shape[:-2]
        return b_pre.expand(*lead, n), b_post.expand(*lead, n), b_res.expand(*lead, n, n)
    x = streams.float()
    x_bar = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    t = torch.tanh(project_float32(x_bar, phi))  # (..., n, 2 + n)
    pre = b_pre + gate[0] * t[..., 0]
    post = b_post + gate[1] * t[..., 1]
    res = b_res + gate[2] * t[..., 2:]
    return pre, post, res


def naive_collapse(streams, pre):
    """h = sum_i H_pre[i] x_i: (..., n, C), (..., n) -> (..., C)."""
    return sum(pre[..., i, None] * streams[..., i, :] for i in range(streams.shape[-2]))


def collapse(streams, pre):
    """`naive_collapse` as one batched matmul: (..., 1, n) @ (..., n, C)."""
    return (pre.unsqueeze(-2).to(streams.dtype) @ streams).squeeze(-2)


def naive_expand(streams, res, post, output):
    """x'_i = sum_j H_res[i, j] x_j + H_post[i] F(h): streams (..., n, C), res (..., n, n), post (..., n),
    output F(h) (..., C) -> (..., n, C)."""
    n = streams.shape[-2]
    rows = []
    for i in range(n):
        mixed = sum(res[..., i, j, None] * streams[..., j, :] for j in range(n))
        rows.append(mixed + post[..., i, None] * output)
    return torch.stack(rows, dim=-2)


def expand(streams, res, post, output):
    """`naive_expand` as a batched matmul plus an outer product."""
    dtype = streams.dtype
    return torch.baddbmm(
        post.to(dtype).reshape(-1, post.shape[-1], 1) * output.reshape(-1, 1, output.shape[-1]),
        res.to(dtype).reshape(-1, *res.shape[-2:]),
        streams.reshape(-1, *streams.shape[-2:]),
    ).reshape(streams.shape)


def composite_gain(residual_matrices):
    """Gain of the composite residual mixing over all layers: for each token, the product
    H_res^(L) ... H_res^(1) of the per-layer matrices (each (..., n, n)), then its largest absolute row sum
    (the infinity norm, the most any stream can be amplified). Returns (...,)."""
    product = None
    for matrix in residual_matrices:
        product = matrix if product is None else matrix @ product
    return product.abs().sum(-1).amax(-1)


def drop_path(output, probability, training):
    """Stochastic depth: zero `output` (B, ...) for a random subset of samples, scale the rest by 1/(1 - p)."""
    if probability == 0.0 or not training:
        return output
    keep = output.new_empty((output.shape[0],) + (1,) * (output.dim() - 1)).bernoulli_(1 - probability)
    return output * keep / (1 - probability)


def sinusoidal_code(positions, dim):
    """The original's fixed sinusoidal code: (...,) float positions -> (..., dim), sin on even, cos on odd channels,
    frequencies 10000^(-2i/dim)."""
    frequencies = torch.exp(
        torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) * (-math.log(1e4) / dim)
    )
    angles = positions.float().unsqueeze(-1) * frequencies
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)


def masked_average_pool(tokens, kept, grid, pool):
    """Average-pool patch tokens over a (grid x grid) patch grid to (pool x pool) cells, counting only kept patches.

    tokens (B, L_keep, C) at patch indices `kept` (B, L_keep) (row-major in the grid) -> (B, C, pool, pool).
    A cell whose patches were all dropped pools to 0.
    """
    batch, _, channels = tokens.shape
    full = tokens.new_zeros(batch, grid * grid, channels)
    full = full.scatter(1, kept.unsqueeze(-1).expand(-1, -1, channels), tokens)
    count = tokens.new_zeros(batch, grid * grid, 1).scatter(1, kept.unsqueeze(-1), 1.0)
    full = full.transpose(1, 2).reshape(batch, channels, grid, grid)
    count = count.transpose(1, 2).reshape(batch, 1, grid, grid)
    return F.adaptive_avg_pool2d(full, pool) / F.adaptive_avg_pool2d(count, pool).clamp_min(1e-6)
