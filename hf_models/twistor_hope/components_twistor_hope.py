"""The Möbius-Twistor components and the HOPE / Nested-Learning blocks of Twistor-HOPE.

Layout: a twistor Z = (ω, π) of two complex vectors with n numbers each is stored as one real vector
[ω_re | ω_im | π_re | π_im] (4 quarters of n). Every recurrent component takes a 0/1 padding mask (1 = token): a
padding position leaves every state unchanged (cell states, running means, memory), so a left-padded row gives its
real tokens the outputs of the row alone. Each stateful component returns its state after the last token and accepts
it back, so a sequence fed in chunks with the state carried equals one pass.

Every component with a per-step form keeps it as `*_reference` (the original's loop structure, readable); the default
path hoists what does not depend on the previous state out of the time loop and is tested equal to the reference on
outputs and gradients.

This file is shipped to the Hub next to the weights (it imports only torch, transformers and the shared block beside
it).
"""

import math

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN

from .shared_compat import GradientCheckpointingLayer


# ------------------------------------------------------------------------------------------------ twistor algebra
def twist(z):
    """The twist T(ω, π) = (conj π, −conj ω): on [ω_re | ω_im | π_re | π_im] it gives [π_re | −π_im | −ω_re | ω_im].

    T is linear and T(T(z)) = −z (T² = −I), so I + cT acts on twistors as the complex number 1 + ci does."""
    quarters = z.unflatten(-1, (4, z.shape[-1] // 4))
    sign = quarters.new_tensor([1.0, -1.0, -1.0, 1.0]).unsqueeze(-1)
    return (quarters[..., [2, 3, 0, 1], :] * sign).flatten(-2)


def spinor_phase(positions, size, dtype=torch.float32):
    """The complex sinusoidal phase of SpinorEmbedding, (..., 2 * size) for integer `positions` (...,).

    With frequencies f_i = 10000^(−2i/size), i < size/2: the real half is [sin(t f_0), cos(t f_0), sin(t f_1), ...] and
    the imaginary half [cos(t f_0), −sin(t f_0), ...]. Defined for every position (the original dropped it past 512)."""
    compute = torch.float64 if dtype == torch.float64 else torch.float32  # angles never in half precision
    frequencies = torch.exp(
        torch.arange(0, size, 2, device=positions.device, dtype=compute) * (-math.log(10000.0) / size)
    )
    angles = positions.to(compute).unsqueeze(-1) * frequencies
    sin, cos = angles.sin(), angles.cos()
    real = torch.stack([sin, cos], dim=-1).flatten(-2)
    imag = torch.stack([cos, -sin], dim=-1).flatten(-2)
    return torch.cat([real, imag], dim=-1).to(dtype)


class SpinorEmbedding(nn.Module):
    """Token ids -> twistors: ω = E_ω[token] + PE_t and π = E_π[token] + PE_t, each 2·`size` wide ([re | im] of `size`
    complex numbers), so the output is 4·`size` wide (the original's README says 2·size; its code, like this one,
    makes 4·size). PE_t is `spinor_phase(t, size)`."""

    def __init__(self, vocab_size, size):
        super().__init__()
        if size % 2:
            raise ValueError(f"SpinorEmbedding size={size} must be even (sin/cos pairs)")
        self.size = size
        self.omega = nn.Embedding(vocab_size, 2 * size)
        self.pi = nn.Embedding(vocab_size, 2 * size)

    def forward(self, input_ids, position_ids):
        phase = spinor_phase(position_ids, self.size, self.omega.weight.dtype)
        return torch.cat([self.omega(input_ids) + phase, self.pi(input_ids) + phase], dim=-1)


# ------------------------------------------------------------------------------------------------ Möbius layers
class MobiusLayer(nn.Module):
    """Parameter-free Möbius layer: z <- z + c_k T(z) for k = 0..K−1, with c_k = c (k + 1) / K (progressive) or c.

    Each cycle multiplies by I + c_k T; since T² = −I this is a scaled rotation by atan(c_k), with norm growth
    sqrt(1 + c_k²) per cycle."""

    def __init__(self, coupling=0.1, num_cycles=3, progressive=True):
        super().__init__()
        self.couplings = [coupling * (k + 1) / num_cycles if progressive else coupling for k in range(num_cycles)]

    def forward(self, z):
        for c in self.couplings:
            z = z + c * twist(z)
        return z


def mobius_mixing_coefficients(coupling, num_cycles):
    """(a, b) with a·(ω, π) + b·(π, −ω) equal to the cell's K mixing cycles (ω, π) <- ((1−c)ω + cπ, (1−c)π − cω),
    c = coupling (k + 1) / K: each cycle is the complex number (1 − c) + c·i acting through J(ω, π) = (π, −ω), J² = −I,
    so the cycles compose into one such number."""
    a, b = 1.0, 0.0
    for k in range(num_cycles):
        c = coupling * (k + 1) / num_cycles
        a, b = a * (1 - c) - b * c, a * c + b * (1 - c)
    return a, b


def _mlp(sizes, activation, last=None):
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACT2FN[activation])
    if last is not None:
        layers.append(last)
    return nn.Sequential(*layers)


class AdaptiveMobiusLayer(nn.Module):
    """Data-dependent twist: for cycle = 1..C, x_t <- x_t + c_t T(x_t) with
    c_t = base + ρ ((0.7 g_t + 0.3 σ(MLP_c(x_t))) − 0.5)·2 and g_t = σ(MLP_g(context_t)).

    `context_t` is the running mean of the inputs up to t (causal, the default: the original's mean over the whole
    sequence let every position read the future); with `causal=False` (bidirectional encoders) the mean of the whole
    sequence. MLP_c sees the current cycle's x_t, as in the original. State: (sum, count) of the running mean."""

    def __init__(self, dim, base=0.1, cycles=3, range_init=0.2, activation="gelu", causal=True):
        super().__init__()
        self.base, self.cycles, self.causal, self.range_init = base, cycles, causal, range_init
        self.coupling_net = _mlp([dim, dim, dim // 2, dim // 4, 1], activation, nn.Sigmoid())
        self.context_net = _mlp([dim, dim // 2, dim // 4, 1], activation, nn.Sigmoid())
        self.adaptive_range = nn.Parameter(torch.full((1,), float(range_init)))

    def reset_special_parameters(self):
        nn.init.constant_(self.adaptive_range, float(self.range_init))

    def _contexts(self, x, mask, state):
        weights = x.new_ones(x.shape[:2]) if mask is None else mask.to(x.dtype)
        if not self.causal:
            total = (x * weights[..., None]).sum(1, keepdim=True)
            return (total / weights.sum(1, keepdim=True)[..., None]).expand_as(x), None
        sums = torch.cumsum(x * weights[..., None], dim=1)
        counts = torch.cumsum(weights, dim=1)[..., None]
        if state is not None:
            sums, counts = sums + state[0][:, None], counts + state[1][:, None]
        # a row that starts with padding has count 0 there: its context is 0 (the output at padding is not used)
        return sums / counts.clamp_min(1), (sums[:, -1], counts[:, -1])

    def _twist(self, x, context):
        global_factor = self.context_net(context)
        for _ in range(self.cycles):
            factors = 0.7 * global_factor + 0.3 * self.coupling_net(x)
            x = x + (self.base + self.adaptive_range * (factors - 0.5) * 2) * twist(x)
        return x

    def forward(self, x, mask=None, state=None):
        context, new_state = self._contexts(x, mask, state)
        return self._twist(x, context), new_state

    def forward_reference(self, x, mask=None, state=None):
        """Token by token: the running mean updated per token, then the cycles on that token."""
        if not self.causal:
            return self.forward(x, mask, state)
        batch, length, dim = x.shape
        total = x.new_zeros(batch, dim) if state is None else state[0]
        count = x.new_zeros(batch, 1) if state is None else state[1]
        outputs = []
        for t in range(length):
            keep = x.new_ones(batch, 1) if mask is None else mask[:, t : t + 1].to(x.dtype)
            total = total + keep * x[:, t]
            count = count + keep
            outputs.append(self._twist(x[:, t : t + 1], (total / count.clamp_min(1))[:, None]))
        return torch.cat(outputs, dim=1), (total, count)


# ------------------------------------------------------------------------------------------------ incidence attention
class IncidenceAttention(nn.Module):
    """Dot-product attention with the learnable Möbius cross term, per head of size h split into halves (ω, π):

        score_ij = [q_i·k_j + w (q_ω,i·k_π,j + q_π,i·k_ω,j)] / sqrt(h)

    The cross term is bilinear, so `implementation="sdpa"` runs it through `scaled_dot_product_attention` on augmented
    queries [q, w q_ω, w q_π] and keys [k, k_π, k_ω] (scale 1/sqrt(h)); `"eager"` writes out the score matrix (the
    reference). The halves are halves of each projected head, not the input's ω/π. `causal=True` masks the future;
    a (batch, keys) 0/1 `attention_mask` masks padding keys. h must be even (the original replaced the term by 0.5 q·k for
    odd h)."""

    def __init__(self, dim, num_heads=8, dropout=0.0, causal=False, mobius_init_std=0.01):
        super().__init__()
        if dim % num_heads or (dim // num_heads) % 2:
            raise ValueError(f"IncidenceAttention: dim={dim} must split into {num_heads} heads of even size")
        self.num_heads, self.head_dim, self.dropout, self.causal = num_heads, dim // num_heads, dropout, causal
        self.mobius_init_std = mobius_init_std
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(dim, dim) for _ in range(4))
        self.mobius_weight = nn.Parameter(torch.randn(1) * mobius_init_std)

    def reset_special_parameters(self):
        nn.init.normal_(self.mobius_weight, std=self.mobius_init_std)

    def _heads(self, x, proj):
        return proj(x).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def _mask(self, attention_mask, queries, keys, device):
        allowed = None
        if self.causal:
            allowed = torch.ones(queries, keys, dtype=torch.bool, device=device).tril(keys - queries)
        if attention_mask is not None:
            padding = attention_mask.bool()[:, None, None, :]
            allowed = padding if allowed is None else allowed & padding
            # a padding query with no key left (causal, left padding) attends to itself: its output is unused, and
            # a row of -inf would put NaN into every gradient
            own = torch.eye(queries, keys, dtype=torch.bool, device=device)[None, None]
            allowed = allowed | (own & ~allowed.any(-1, keepdim=True))
        return allowed

    def forward(self, x, attention_mask=None, implementation="sdpa"):
        q, k, v = self._heads(x, self.q_proj), self._heads(x, self.k_proj), self._heads(x, self.v_proj)
        q_omega, q_pi = q.chunk(2, dim=-1)
        k_omega, k_pi = k.chunk(2, dim=-1)
        allowed = self._mask(attention_mask, x.shape[1], x.shape[1], x.device)
        dropout = self.dropout if self.training else 0.0
        scale = 1.0 / math.sqrt(self.head_dim)
        if implementation == "sdpa":
            w = self.mobius_weight.to(q.dtype)
            queries = torch.cat([q, w * q_omega, w * q_pi], dim=-1)
            keys = torch.cat([k, k_pi, k_omega], dim=-1)
            out = F.scaled_dot_product_attention(queries, keys, v, attn_mask=allowed, dropout_p=dropout, scale=scale)
        elif implementation == "eager":
            cross = q_omega @ k_pi.transpose(-1, -2) + q_pi @ k_omega.transpose(-1, -2)
            scores = (q @ k.transpose(-1, -2) + self.mobius_weight * cross) * scale
            if allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            out = F.dropout(scores.softmax(-1), dropout, self.training) @ v
        else:
            raise ValueError(f"implementation must be 'sdpa' or 'eager'; got {implementation!r}")
        return self.o_proj(out.transpose(1, 2).flatten(-2))


# ------------------------------------------------------------------------------------------------ fused cell scan
_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _gelu_grad(x):
    """d/dx of the exact GELU x Φ(x): Φ(x) + x φ(x)."""
    return 0.5 * (1.0 + torch.erf(x * _SQRT_HALF)) + x * torch.exp(-0.5 * x * x) * _INV_SQRT_2PI


class _CellScan(torch.autograd.Function):
    """The twistor cell over a whole sequence (multi-scale evolution, adaptive rate, exact GELU) with a hand-written
    backward: the forward keeps what the backward needs step by step, the backward walks the steps in reverse for
    the gradients that flow through time (seven small matmuls per step) and computes every weight gradient at the
    end as one matmul over all steps (instead of one per step, as autograd would). Runs outside autocast in the
    dtype of its input (float32 under mixed precision: the recurrence's small matmuls gain nothing from bf16)."""

    @staticmethod
    def forward(ctx, gate_x, h, keep, mixing, w_h, w_first, b_first, w_m2, b_m2, w_s2, b_s2, w_s3, b_s3, scale,
                w_r2, b_r2, w_r3, b_r3):  # fmt: skip
        n = h.shape[-1]
        a, b = mixing
        weights = scale.softmax(0)
        steps = gate_x.unbind(1)
        saved = {key: [] for key in ("h", "gates", "s1", "q", "med", "pre_s2", "v_s", "slow", "pre_r2", "v_r",
                                     "sig_z", "e", "tanh_s3")}  # fmt: skip
        outputs = []
        keeps = None if keep is None else keep.unbind(1)
        for t, gate_x_t in enumerate(steps):
            p = h @ w_h.T
            g = gate_x_t + p[:, : 4 * n]
            sig = torch.sigmoid(g)  # i, f, (unused), o
            candidate = torch.tanh(g[:, 2 * n : 3 * n])
            gates = torch.cat([sig[:, : 2 * n], candidate, sig[:, 3 * n :]], dim=-1)
            s1 = torch.addcmul(sig[:, n : 2 * n] * h, sig[:, :n], candidate)
            q = torch.addmm(b_first, s1, w_first.T)
            q[:, 5 * n :] += p[:, 4 * n :]
            fast = torch.tanh(q[:, :n])
            med = torch.tanh(torch.addmm(b_m2, F.gelu(q[:, n : 3 * n]), w_m2.T))
            pre_s2 = torch.addmm(b_s2, F.gelu(q[:, 3 * n : 5 * n]), w_s2.T)
            v_s = F.gelu(pre_s2)
            slow = torch.tanh(torch.addmm(b_s3, v_s, w_s3.T))
            pre_r2 = torch.addmm(b_r2, F.gelu(q[:, 5 * n :]), w_r2.T)
            v_r = F.gelu(pre_r2)
            sig_z = torch.sigmoid(torch.addmm(b_r3, v_r, w_r3.T))
            e = weights[0] * fast + weights[1] * med + weights[2] * slow
            s2 = s1 + (0.001 + 0.099 * sig_z) * e
            s3 = a * s2 + b * torch.cat([s2[:, n // 2 :], -s2[:, : n // 2]], dim=-1)
            tanh_s3 = torch.tanh(s3)
            new_h = sig[:, 3 * n :] * tanh_s3
            for key, value in (("h", h), ("gates", gates), ("s1", s1), ("q", q), ("med", med), ("pre_s2", pre_s2),
                               ("v_s", v_s), ("slow", slow), ("pre_r2", pre_r2), ("v_r", v_r), ("sig_z", sig_z),
                               ("e", e), ("tanh_s3", tanh_s3)):  # fmt: skip
                saved[key].append(value)
            h = new_h if keeps is None else torch.where(keeps[t], new_h, h)
            outputs.append(h)
        stacked = {key: torch.stack(values) for key, values in saved.items()}  # (T, B, ...)
        ctx.mixing = mixing
        ctx.save_for_backward(keep, w_h, w_first, w_m2, w_s2, w_s3, scale, w_r2, w_r3, *stacked.values())
        ctx.keys = list(stacked)
        return torch.stack(outputs, dim=1), h

    @staticmethod
    def backward(ctx, grad_outputs, grad_last):
        keep, w_h, w_first, w_m2, w_s2, w_s3, scale, w_r2, w_r3, *tensors = ctx.saved_tensors
        saved = dict(zip(ctx.keys, tensors, strict=True))
        a, b = ctx.mixing
        length, batch, n = saved["h"].shape
        weights = scale.softmax(0)
        w0, w1, w2 = weights[0], weights[1], weights[2]
        grad_outputs = grad_outputs if grad_outputs is not None else saved["h"].new_zeros(batch, length, n)
        dh = grad_last if grad_last is not None else saved["h"].new_zeros(batch, n)
        keeps = None if keep is None else keep.unbind(1)
        d_p, d_q, d_m2, d_s3, d_s2, d_r2, d_r3 = [], [], [], [], [], [], []
        d_weights = torch.zeros(3, dtype=saved["e"].dtype, device=saved["e"].device)
        grad_steps = grad_outputs.unbind(1)
        for t in range(length - 1, -1, -1):
            dh = dh + grad_steps[t]
            if keeps is not None:  # a padding step passed h through: its gradient goes straight to h_{t-1}
                carried = torch.where(keeps[t], 0.0, dh)
                dh = torch.where(keeps[t], dh, 0.0)
            gates, tanh_s3, e = saved["gates"][t], saved["tanh_s3"][t], saved["e"][t]
            i, f, candidate, o = gates[:, :n], gates[:, n : 2 * n], gates[:, 2 * n : 3 * n], gates[:, 3 * n :]
            h_prev, q = saved["h"][t], saved["q"][t]
            do = dh * tanh_s3
            ds3 = dh * o * (1 - tanh_s3 * tanh_s3)
            ds2 = a * ds3 + b * torch.cat([-ds3[:, n // 2 :], ds3[:, : n // 2]], dim=-1)  # (a + bJ)ᵀ
            sig_z = saved["sig_z"][t]
            dz = (ds2 * e).sum(-1, keepdim=True) * 0.099 * sig_z * (1 - sig_z)
            de = ds2 * (0.001 + 0.099 * sig_z)
            d_weights += torch.stack([(de * torch.tanh(q[:, :n])).sum(), (de * saved["med"][t]).sum(),
                                      (de * saved["slow"][t]).sum()])  # fmt: skip
            d_pre_fast = de * w0 * (1 - torch.tanh(q[:, :n]).square())
            med = saved["med"][t]
            d_pre_m2 = de * w1 * (1 - med * med)
            d_a_m = (d_pre_m2 @ w_m2) * _gelu_grad(q[:, n : 3 * n])
            slow = saved["slow"][t]
            d_pre_s3 = de * w2 * (1 - slow * slow)
            d_pre_s2 = (d_pre_s3 @ w_s3) * _gelu_grad(saved["pre_s2"][t])
            d_a_s = (d_pre_s2 @ w_s2) * _gelu_grad(q[:, 3 * n : 5 * n])
            d_pre_r2 = (dz @ w_r3) * _gelu_grad(saved["pre_r2"][t])
            d_a_r = (d_pre_r2 @ w_r2) * _gelu_grad(q[:, 5 * n :])
            dq = torch.cat([d_pre_fast, d_a_m, d_a_s, d_a_r], dim=-1)
            ds1 = ds2 + dq @ w_first
            dg = torch.cat(
                [ds1 * candidate * i * (1 - i), ds1 * h_prev * f * (1 - f), ds1 * i * (1 - candidate * candidate),
                 do * o * (1 - o)], dim=-1,
            )  # fmt: skip
            dp = torch.cat([dg, d_a_r], dim=-1)
            dh = ds1 * f + dp @ w_h
            if keeps is not None:
                dh = dh + carried
            d_p.append(dp)
            d_q.append(dq)
            d_m2.append(d_pre_m2)
            d_s3.append(d_pre_s3)
            d_s2.append(d_pre_s2)
            d_r2.append(d_pre_r2)
            d_r3.append(dz)

        def weight_grad(grads, inputs):  # Σ_t gradᵀ input over every step and row: one matmul
            grads = torch.stack(grads[::-1]).flatten(0, 1)
            return grads.T @ inputs.flatten(0, 1), grads.sum(0)

        d_w_h, _ = weight_grad(d_p, saved["h"])
        d_w_first, d_b_first = weight_grad(d_q, saved["s1"])
        gelu_m = F.gelu(saved["q"][..., n : 3 * n])
        d_w_m2, d_b_m2 = weight_grad(d_m2, gelu_m)
        d_w_s3, d_b_s3 = weight_grad(d_s3, saved["v_s"])
        d_w_s2, d_b_s2 = weight_grad(d_s2, F.gelu(saved["q"][..., 3 * n : 5 * n]))
        d_w_r2, d_b_r2 = weight_grad(d_r2, F.gelu(saved["q"][..., 5 * n :]))
        d_w_r3, d_b_r3 = weight_grad(d_r3, saved["v_r"])
        d_gate_x = torch.stack([g[:, : 4 * n] for g in d_p[::-1]], dim=1)
        d_scale = weights * (d_weights - (weights * d_weights).sum())  # softmax backward
        return (d_gate_x, dh, None, None, d_w_h, d_w_first, d_b_first, d_w_m2, d_b_m2, d_w_s2, d_b_s2, d_w_s3,
                d_b_s3, d_scale, d_w_r2, d_b_r2, d_w_r3, d_b_r3)  # fmt: skip


# ------------------------------------------------------------------------------------------------ twistor cell
class TwistorTitansCell(nn.Module):
    """The gated twistor cell (one layer, one direction). With c = [x_t, h_{t−1}] and ω/π halves of width n/2:

        i, f, o = σ(W_{i,f,o} c), c̃ = tanh(W_c c)                     (separately for ω and π: rows of one matrix)
        s = f ⊙ h_{t−1} + i ⊙ c̃
        e = Σ_j softmax(a)_j N_j(s)      N_fast, N_medium, N_slow: tanh MLPs of depth 1, 2, 3 (multi-scale)
        r = 0.001 + 0.099 σ(MLP_r([s, h_{t−1}]))                        (adaptive evolution rate; else a parameter)
        s <- s + r e
        (s_ω, s_π) <- K Möbius mixing cycles ((1−c_k) s_ω + c_k s_π, (1−c_k) s_π − c_k s_ω), c_k = c (k + 1) / K
        h_t = o ⊙ tanh(s)

    Only h is carried (no separate cell state), as in the original. `forward` hoists the input halves of every
    x-dependent matmul out of the time loop (one batched matmul over all steps), fuses the per-step matmuls that
    read the same vector, and folds the K mixing cycles into one (a, b) pair; `forward_reference` is the per-step
    loop with one matmul per gate."""

    def __init__(self, input_size, hidden_size, config):
        super().__init__()
        n = hidden_size
        self.input_size, self.hidden_size = input_size, n
        self.multiscale = config.use_multiscale_evolution
        self.adaptive_rate = config.use_adaptive_evolution_rate
        self.act = ACT2FN[config.hidden_act]
        # rows: [i_ω, i_π, f_ω, f_π, c̃_ω, c̃_π, o_ω, o_π], n/2 each
        self.gate_proj = nn.Linear(input_size + n, 4 * n)
        if self.multiscale:
            self.evolution_fast = nn.Linear(n, n)
            self.evolution_medium = nn.ModuleList([nn.Linear(n, 2 * n), nn.Linear(2 * n, n)])
            self.evolution_slow = nn.ModuleList([nn.Linear(n, 2 * n), nn.Linear(2 * n, 2 * n), nn.Linear(2 * n, n)])
            self.scale_weights = nn.Parameter(torch.full((3,), 1 / 3))
        else:
            self.evolution = nn.ModuleList([nn.Linear(n, 2 * n), nn.Linear(2 * n, n)])
        if self.adaptive_rate:
            self.rate = nn.ModuleList([nn.Linear(2 * n, n), nn.Linear(n, n // 2), nn.Linear(n // 2, 1)])
        else:
            self.evolution_rate = nn.Parameter(torch.full((1,), 0.01))
        self.mixing = mobius_mixing_coefficients(config.mobius_coupling, config.num_mobius_cycles)
        self.scan_supported = self.multiscale and self.adaptive_rate and config.hidden_act == "gelu" and n % 2 == 0
        self.num_mobius_cycles, self.mobius_coupling = config.num_mobius_cycles, config.mobius_coupling

    def reset_special_parameters(self):
        if self.multiscale:
            nn.init.constant_(self.scale_weights, 1 / 3)
        if not self.adaptive_rate:
            nn.init.constant_(self.evolution_rate, 0.01)

    # the pieces shared by both paths
    def _evolution(self, s, first=None):
        """e from the cell state s; `first`: the precomputed first layers (fast | medium | slow) of s."""
        if not self.multiscale:
            hidden = self.act(self.evolution[0](s) if first is None else first)
            return torch.tanh(self.evolution[1](hidden))
        n = self.hidden_size
        if first is None:
            fast = torch.tanh(self.evolution_fast(s))
            medium = self.act(self.evolution_medium[0](s))
            slow = self.act(self.evolution_slow[0](s))
        else:
            fast, medium, slow = torch.tanh(first[:, :n]), self.act(first[:, n : 3 * n]), self.act(first[:, 3 * n :])
        medium = torch.tanh(self.evolution_medium[1](medium))
        slow = torch.tanh(self.evolution_slow[2](self.act(self.evolution_slow[1](slow))))
        weights = self.scale_weights.softmax(0)
        return weights[0] * fast + weights[1] * medium + weights[2] * slow

    def _rate(self, first):
        """The evolution rate from the rate MLP's first layer output (pre-activation)."""
        hidden = self.act(self.rate[1](self.act(first)))
        return 0.001 + 0.099 * torch.sigmoid(self.rate[2](hidden))

    def _evolution_first_layers(self):
        """The first layers that read s, stacked: evolution (fast | medium | slow, or the single net) and the rate
        MLP's s half."""
        n = self.hidden_size
        if self.multiscale:
            layers = [self.evolution_fast, self.evolution_medium[0], self.evolution_slow[0]]
        else:
            layers = [self.evolution[0]]
        weights = [layer.weight for layer in layers]
        biases = [layer.bias for layer in layers]
        if self.adaptive_rate:
            weights.append(self.rate[0].weight[:, :n])
            biases.append(self.rate[0].bias)
        return torch.cat(weights), torch.cat(biases)

    def forward(self, x, h=None, mask=None):
        """x (B, T, input_size), h (B, n) or None (zeros), mask (B, T) or None -> outputs (B, T, n), h after the
        last token. A padding step keeps h (and outputs it). The default cell (multi-scale evolution, adaptive rate,
        exact GELU) runs as `_CellScan`, with its hand-written backward; other variants run `forward_autograd`."""
        if not self.scan_supported:
            return self.forward_autograd(x, h, mask)
        batch, n = x.shape[0], self.hidden_size
        with torch.autocast(x.device.type, enabled=False):
            dtype = x.dtype
            weight = self.gate_proj.weight.to(dtype)
            h = x.new_zeros(batch, n) if h is None else h.to(dtype)
            gate_x = F.linear(x, weight[:, : self.input_size], self.gate_proj.bias.to(dtype))
            recurrent_weight = torch.cat([weight[:, self.input_size :], self.rate[0].weight[:, n:].to(dtype)])
            first_weight, first_bias = self._evolution_first_layers()
            keep = None if mask is None else mask.to(torch.bool)[..., None]
            parameters = [
                recurrent_weight,
                first_weight,
                first_bias,
                *self.evolution_medium[1].parameters(),
                *self.evolution_slow[1].parameters(),
                *self.evolution_slow[2].parameters(),
                self.scale_weights,
                *self.rate[1].parameters(),
                *self.rate[2].parameters(),
            ]
            return _CellScan.apply(gate_x, h, keep, self.mixing, *(p.to(dtype) for p in parameters))

    def forward_autograd(self, x, h=None, mask=None):
        """The same hoisted step as `forward`, differentiated by autograd (every variant of the cell)."""
        batch, length, _ = x.shape
        n = self.hidden_size
        a, b = self.mixing
        h = x.new_zeros(batch, n) if h is None else h
        # hoisted: the x half of the gates, for every step at once
        gate_x = F.linear(x, self.gate_proj.weight[:, : self.input_size], self.gate_proj.bias)
        recurrent_weight = self.gate_proj.weight[:, self.input_size :]  # (4n, n)
        if self.adaptive_rate:
            recurrent_weight = torch.cat([recurrent_weight, self.rate[0].weight[:, n:]])  # h feeds the rate MLP too
        first_weight, first_bias = self._evolution_first_layers()
        evolution_width = first_weight.shape[0] - (n if self.adaptive_rate else 0)
        keep = None if mask is None else mask.to(torch.bool)[..., None].unbind(1)
        outputs = []
        # unbind, not gate_x[:, t]: the backward of T slices would build T zero tensors of the full size (O(T²))
        for t, gate_x_t in enumerate(gate_x.unbind(1)):
            from_h = h @ recurrent_weight.T
            gates = gate_x_t + from_h[:, : 4 * n]
            sig = torch.sigmoid(gates[:, : 2 * n])
            i_gate, f_gate = sig[:, :n], sig[:, n:]
            s = torch.addcmul(f_gate * h, i_gate, torch.tanh(gates[:, 2 * n : 3 * n]))
            first = torch.addmm(first_bias, s, first_weight.T)
            evolution = self._evolution(s, first[:, :evolution_width])
            rate = (
                self._rate(first[:, evolution_width:] + from_h[:, 4 * n :])
                if self.adaptive_rate
                else self.evolution_rate
            )
            s = s + rate * evolution
            s_omega, s_pi = s.chunk(2, dim=-1)
            s = a * s + b * torch.cat([s_pi, -s_omega], dim=-1)
            new_h = torch.sigmoid(gates[:, 3 * n :]) * torch.tanh(s)
            h = new_h if keep is None else torch.where(keep[t], new_h, h)
            outputs.append(h)
        return torch.stack(outputs, dim=1), h

    def forward_reference(self, x, h=None, mask=None):
        """The per-step loop of the original: each gate its own matmul on cat([x_t, h]), ω and π apart, the evolution
        networks and the mixing cycles one by one."""
        batch, length, _ = x.shape
        n, half = self.hidden_size, self.hidden_size // 2
        h = x.new_zeros(batch, n) if h is None else h
        weight, bias = self.gate_proj.weight, self.gate_proj.bias

        def gate(c, index):
            return F.linear(c, weight[index * half : (index + 1) * half], bias[index * half : (index + 1) * half])

        outputs = []
        for t in range(length):
            h_omega, h_pi = h.chunk(2, dim=-1)
            c = torch.cat([x[:, t], h], dim=-1)
            i_omega, i_pi = torch.sigmoid(gate(c, 0)), torch.sigmoid(gate(c, 1))
            f_omega, f_pi = torch.sigmoid(gate(c, 2)), torch.sigmoid(gate(c, 3))
            c_omega, c_pi = torch.tanh(gate(c, 4)), torch.tanh(gate(c, 5))
            s_omega = f_omega * h_omega + i_omega * c_omega
            s_pi = f_pi * h_pi + i_pi * c_pi
            s = torch.cat([s_omega, s_pi], dim=-1)
            evolution = self._evolution(s)
            if self.adaptive_rate:
                rate = self._rate(self.rate[0](torch.cat([s, h], dim=-1)))
            else:
                rate = self.evolution_rate
            e_omega, e_pi = evolution.chunk(2, dim=-1)
            s_omega, s_pi = s_omega + rate * e_omega, s_pi + rate * e_pi
            for k in range(self.num_mobius_cycles):
                coupling = self.mobius_coupling * (k + 1) / self.num_mobius_cycles
                s_omega, s_pi = (1 - coupling) * s_omega + coupling * s_pi, (1 - coupling) * s_pi - coupling * s_omega
            new_h = torch.cat(
                [torch.sigmoid(gate(c, 6)) * torch.tanh(s_omega), torch.sigmoid(gate(c, 7)) * torch.tanh(s_pi)], dim=-1
            )
            if mask is not None:
                new_h = torch.where(mask[:, t : t + 1].bool(), new_h, h)
            h = new_h
            outputs.append(h)
        return torch.stack(outputs, dim=1), h


class TwistorTitansRecurrent(nn.Module):
    """Stacked twistor cells with dropout between layers. Bidirectional: each layer runs a forward and a backward
    cell on the previous layer's output and concatenates them position by position (the original fed the backward
    cell the raw input, misaligned its outputs and crashed with more than one layer). No state reset: the original
    zeroed the state every 512 tokens; here any length is one recurrence. State: each forward cell's h."""

    def __init__(self, config):
        super().__init__()
        n = config.recurrent_hidden_size
        directions = 2 if config.bidirectional else 1
        self.bidirectional = config.bidirectional
        self.reference = config.recurrent_implementation == "reference"
        sizes = [config.twistor_size] + [directions * n] * (config.num_recurrent_layers - 1)
        self.forward_cells = nn.ModuleList(TwistorTitansCell(size, n, config) for size in sizes)
        self.backward_cells = (
            nn.ModuleList(TwistorTitansCell(size, n, config) for size in sizes) if config.bidirectional else None
        )
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.output_size = directions * n

    def forward(self, x, mask=None, states=None):
        new_states = []
        for index, cell in enumerate(self.forward_cells):
            if index > 0:
                x = self.dropout(x)
            run = cell.forward_reference if self.reference else cell
            out, h = run(x, None if states is None else states[index], mask)
            new_states.append(h)
            if self.bidirectional:
                backward = self.backward_cells[index]
                run = backward.forward_reference if self.reference else backward
                flipped_mask = None if mask is None else mask.flip(1)
                out_backward, _ = run(x.flip(1), None, flipped_mask)
                out = torch.cat([out, out_backward.flip(1)], dim=-1)
            x = out
        return x, new_states


# ------------------------------------------------------------------------------------------------ self-modifying block
class TwistorSelfModifyingRecurrent(GradientCheckpointingLayer):
    """x <- x + P(Recurrent(LN₁ x)); x <- x + AdaptiveMöbius(LN₂ x); x <- x + FFN(x) (the original's FFN has no
    pre-norm). The original then multiplied by (1 + 0.1 σ(w)) in training only (a train/eval mismatch of about x1.05):
    here only with `config.faithful_train_scaling`."""

    def __init__(self, config):
        super().__init__()
        dim = config.twistor_size
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.recurrent = TwistorTitansRecurrent(config)
        self.output_proj = (
            nn.Linear(self.recurrent.output_size, dim) if self.recurrent.output_size != dim else nn.Identity()
        )
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.adaptive_mobius = AdaptiveMobiusLayer(
            dim,
            config.adaptive_coupling_base,
            config.adaptive_mobius_cycles,
            config.adaptive_range_init,
            config.hidden_act,
            causal=not config.bidirectional,
        )
        self.reference = config.recurrent_implementation == "reference"
        self.ffn = nn.Sequential(
            nn.Linear(dim, config.intermediate_size),
            ACT2FN[config.hidden_act],
            nn.Linear(config.intermediate_size, dim),
            nn.Dropout(config.hidden_dropout),
        )
        self.self_modify_weight = nn.Parameter(torch.full((1,), 0.01)) if config.faithful_train_scaling else None

    def reset_special_parameters(self):
        if self.self_modify_weight is not None:
            nn.init.constant_(self.self_modify_weight, 0.01)

    def forward(self, x, mask=None, state=None):
        """State: {"cells": [h per layer], "context": (sum, count) of the adaptive layer's running mean}."""
        state = state or {}
        out, cells = self.recurrent(self.norm1(x), mask, state.get("cells"))
        x = x + self.output_proj(out)
        mobius = self.adaptive_mobius.forward_reference if self.reference else self.adaptive_mobius
        out, context = mobius(self.norm2(x), mask, state.get("context"))
        x = x + out
        x = x + self.ffn(x)
        if self.self_modify_weight is not None and self.training:
            x = x * (1 + 0.1 * torch.sigmoid(self.self_modify_weight))
        return x, {"cells": cells, "context": context}


# ------------------------------------------------------------------------------------------------ continuum memory
class TwistorMemorySystem(nn.Module):
    """Continuum memory: K slots M_k (twistors), per sequence, read and written as the tokens arrive.

    Read (token t): out_t = x_t + Σ_k w_{t,k} P(M_k), w_t = softmax_k(σ(G_k(x_t))), P = PhaseCompression ∘
    MöbiusCycle (the original's read). P is affine, so Σ_k w_k P(M_k) = P(Σ_k w_k M_k), which the default path uses.

    Write (after the read): slot k is written once every C_k = `memory_update_periods[k]` tokens of the row (the CMS
    frequencies of Nested Learning), with the gated tokens of its chunk:
        M_k <- M_k − (η / C_k) (Σ_chunk w_{t,k} · M_k − Σ_chunk w_{t,k} x_t),
    i.e. M_k <- (1 − r) M_k + r x̄ with rate r = η · mean_chunk(w_k) and x̄ the w-weighted mean of the chunk (the
    original's rate η · mean(w) and its EMA). The slots start from learned initial states (different per slot), and
    the memory is recurrent state of each sequence: never shared across the batch, never written into the weights
    (the original kept one buffer for all rows, wrote the same vector to every slot, and changed it only in training).
    State: (M, chunk sums of w x, chunk sums of w, tokens seen per row)."""

    def __init__(self, config):
        super().__init__()
        dim, k = config.twistor_size, config.num_memories
        self.num_memories, self.rate = k, config.memory_update_rate
        self.periods = list(config.memory_update_periods)
        self.init_std = config.initializer_range
        self.memory_init = nn.Parameter(torch.randn(k, dim) * config.initializer_range)
        self.gates = nn.ModuleList(_mlp([dim, dim // 2, 1], config.hidden_act, nn.Sigmoid()) for _ in range(k))
        self.memory_cycle = nn.ModuleList(
            MobiusLayer(0.1 / (i + 1), num_cycles=3, progressive=True) for i in range(config.num_memory_cycles)
        )
        if config.use_phase_compression:
            compressed = int(dim * config.phase_compression_ratio)
            self.compress, self.decompress = nn.Linear(dim, compressed), nn.Linear(compressed, dim)
        else:
            self.compress = self.decompress = None
        self.reference = config.recurrent_implementation == "reference"

    def reset_special_parameters(self):
        nn.init.normal_(self.memory_init, std=self.init_std)

    def process(self, memory):
        """P(M): the Möbius cycles, then the phase compression bottleneck."""
        for layer in self.memory_cycle:
            memory = layer(memory)
        if self.compress is not None:
            memory = self.decompress(self.compress(memory))
        return memory

    def initial_state(self, batch, dtype, device):
        memory = self.memory_init.to(dtype).unsqueeze(0).expand(batch, -1, -1)
        k, dim = self.memory_init.shape
        return (
            memory,
            memory.new_zeros(batch, k, dim),
            memory.new_zeros(batch, k),
            torch.zeros(batch, dtype=torch.long, device=device),
        )

    def _weights(self, x):
        return torch.cat([gate(x) for gate in self.gates], dim=-1).softmax(-1)  # (B, T, K)

    def _events(self, seen, mask, length):
        """(B, T, K) bool: slot k is written after token t; and the tokens seen after the last one."""
        steps = (
            torch.ones(seen.shape[0], length, dtype=torch.long, device=seen.device) if mask is None else mask.long()
        )
        counts = seen[:, None] + torch.cumsum(steps, dim=1)  # tokens of the row seen up to t (inclusive)
        periods = torch.tensor(self.periods, device=seen.device)
        events = (steps[..., None] > 0) & (counts[..., None] % periods == 0)
        return events, counts[:, -1]

    def forward(self, x, mask=None, state=None):
        batch, length, dim = x.shape
        memory, sums, weight_sums, seen = state if state is not None else self.initial_state(batch, x.dtype, x.device)
        weights = self._weights(x)
        if mask is not None:
            weights_in = weights * mask.to(x.dtype)[..., None]
        else:
            weights_in = weights
        events, seen_after = self._events(seen, mask, length)
        if self.reference:
            return self._forward_reference(x, weights, weights_in, events, (memory, sums, weight_sums), seen_after)
        coefficients = x.new_tensor([self.rate / p for p in self.periods])[:, None]  # (K, 1)
        written = (weights_in[..., None] * x[:, :, None, :]).unbind(1)  # T x (B, K, D)
        reads = []
        for written_t, weights_t, events_t in zip(written, weights_in.unbind(1), events.unbind(1), strict=True):
            reads.append(memory)
            sums = sums + written_t
            weight_sums = weight_sums + weights_t
            event = events_t[..., None]
            updated = memory - coefficients * (weight_sums[..., None] * memory - sums)
            memory = torch.where(event, updated, memory)
            sums = torch.where(event, 0.0, sums)
            weight_sums = torch.where(events_t, 0.0, weight_sums)
        mixed = (weights[..., None] * torch.stack(reads, dim=1)).sum(2)  # Σ_k w_k M_k, (B, T, D)
        return x + self.process(mixed), (memory, sums, weight_sums, seen_after)

    def _forward_reference(self, x, weights, weights_in, events, carried, seen_after):
        memory, sums, weight_sums = carried
        outputs = []
        for t in range(x.shape[1]):
            processed = self.process(memory)  # (B, K, D): P of every slot
            outputs.append(x[:, t] + (weights[:, t, :, None] * processed).sum(1))
            for k, period in enumerate(self.periods):
                sums = sums.clone()
                weight_sums = weight_sums.clone()
                sums[:, k] = sums[:, k] + weights_in[:, t, k, None] * x[:, t]
                weight_sums[:, k] = weight_sums[:, k] + weights_in[:, t, k]
                rate = self.rate * weight_sums[:, k, None] / period
                updated = (1 - rate) * memory[:, k] + self.rate / period * sums[:, k]
                event = events[:, t, k, None]
                memory = memory.clone()
                memory[:, k] = torch.where(event, updated, memory[:, k])
                sums[:, k] = torch.where(event, 0.0, sums[:, k])
                weight_sums[:, k] = torch.where(events[:, t, k], 0.0, weight_sums[:, k])
        return torch.stack(outputs, dim=1), (memory, sums, weight_sums, seen_after)


# ------------------------------------------------------------------------------------------------ nested learning
def incidence_residual(z, eps=1e-6):
    """Mean squared cosine between ω and π taken as real vectors: Re⟨ω, π⟩ = (ω·π* + π·ω*) / 2 is 0 exactly when the
    incidence relation ω·π* + π·ω* = 0 holds; the cosine makes it scale-free."""
    omega, pi = z.chunk(2, dim=-1)
    dot = (omega * pi).sum(-1)
    return (dot / (omega.norm(dim=-1) * pi.norm(dim=-1) + eps)).pow(2).mean()


class TwistorNestedLearning(nn.Module):
    """L nested levels on the halves of x = [ω | π]: ω_ℓ = s ω_{ℓ−1} + (1 − s) MLP^ω_ℓ(ω_{ℓ−1}), s = σ(r^ω_ℓ) (r starts
    at 0.5), and the same for π with its own MLPs and gates.

    Constraint loss: with `constraint_type="incidence"` the incidence residual of the final level (weight
    `constraint_weight`) plus that of each intermediate level (weight `level_weight`, which follows the training
    progress); with `"learned"` the original's critics mean |g_ℓ([ω_ℓ, π_ℓ])| (MLPs that can learn to output 0)."""

    def __init__(self, config):
        super().__init__()
        dim, half, levels = config.twistor_size, config.twistor_size // 2, config.num_nested_levels
        self.levels = levels
        self.omega_nets = nn.ModuleList(_mlp([half, half, half], config.hidden_act) for _ in range(levels))
        self.pi_nets = nn.ModuleList(_mlp([half, half, half], config.hidden_act) for _ in range(levels))
        self.omega_residual = nn.Parameter(torch.full((levels,), 0.5))
        self.pi_residual = nn.Parameter(torch.full((levels,), 0.5))
        self.constraint_type = config.constraint_type
        self.constraint_weight = config.constraint_weight
        self.use_level_constraints = config.use_level_constraints and levels > 1
        if self.constraint_type == "learned":
            count = 1 + (levels - 1 if self.use_level_constraints else 0)
            self.critics = nn.ModuleList(_mlp([dim, dim // 2, 1], config.hidden_act) for _ in range(count))
        else:
            self.critics = None

    def reset_special_parameters(self):
        nn.init.constant_(self.omega_residual, 0.5)
        nn.init.constant_(self.pi_residual, 0.5)

    def _constraint(self, z, index):
        if self.critics is None:
            return incidence_residual(z)
        return self.critics[index](z).abs().mean()

    def forward(self, x, level_weight):
        omega, pi = x.chunk(2, dim=-1)
        gates_omega, gates_pi = torch.sigmoid(self.omega_residual), torch.sigmoid(self.pi_residual)
        loss = x.new_zeros(())
        for level in range(self.levels):
            omega = gates_omega[level] * omega + (1 - gates_omega[level]) * self.omega_nets[level](omega)
            pi = gates_pi[level] * pi + (1 - gates_pi[level]) * self.pi_nets[level](pi)
            if self.use_level_constraints and level < self.levels - 1:
                loss = loss + level_weight * self._constraint(torch.cat([omega, pi], dim=-1), level + 1)
        out = torch.cat([omega, pi], dim=-1)
        return out, loss + self.constraint_weight * self._constraint(out, 0)
