"""Titans' neural long-term memory as two interchangeable ops: `naive_neural_memory` (token by token, each surprise
from `torch.autograd.grad`: the readable oracle) and `chunked_neural_memory` (every chunk's surprise of a memory
batch at once, as batched matmuls with the MLP's gradient written out). `neural_memory` dispatches. Paper: "Titans:
Learning to Memorize at Test Time", arXiv 2501.00663, Sections 3.1-3.2.

The memory M is an MLP of depth L_M whose weights are the state (one MLP per memory head):

    M(x) = W_{L-1}ᵀ ... gelu(W_1ᵀ gelu(W_0ᵀ x))      (x @ W_0 @ ...; exact GELU between layers)
    ℓ(W; k_t, v_t) = mean_d (M_W(k_t) - v_t)²          associative loss of token t
    U_c = - Σ_{t ∈ chunk c} θ_t ∇_W ℓ(W_start; k_t, v_t)   surprise of chunk c, at the weights W_start of the start
                                                         of its memory batch (mini-batch gradient descent, Eq. 16-17)
    U_c <- ρ_c ⊙ U_c                                     per-matrix lr modulation (optional)
    U_c <- θ̄_c U_c / ‖U_c‖₂                              spectral-normalised surprise (optional)
    S^(1)_c = η_c S^(1)_{c-1} + U_c,  S^(k)_c = η_c S^(k)_{c-1} + S^(k-1)_c          momentum of order K (Eq. 10)
    Δ_c = Σ_k γ_{c,k} S^(k)_c   (γ = 1 for K = 1; Δ_c = U_c without momentum)
    W_c = (1 - α_c) W_{c-1} + Δ_c                        forgetting gate (Eq. 13; α = 0 without weight decay)
    y_t = M_{W_{c-1}}(q_t)  for t in chunk c             retrieval with the weights before the chunk: causal

With chunks of one token and one token per memory batch this is the paper's per-token recurrence. The memory writes
in every mode (training, eval, no_grad): learning at test time is the point.

Dimension letters: N sequences (batch x channels), H memory heads, T tokens, C chunks, B tokens per chunk, D head
width (d_h), I / O a weight matrix's input / output width, K momentum orders.
"""

import math

import torch
import torch.nn.functional as F


_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _gelu_grad(x):
    """d/dx of the exact GELU x Φ(x): Φ(x) + x φ(x) (torch ops, so autograd differentiates it again)."""
    return 0.5 * (1.0 + torch.erf(x * _SQRT_HALF)) + x * torch.exp(-0.5 * x * x) * _INV_SQRT_2PI


def memory_mlp(weights, x):
    """M_W(x): `weights` [(..., I, O)] per layer, `x` (..., T, I) -> (..., T, O); GELU between layers."""
    for index, weight in enumerate(weights):
        x = x @ weight
        if index < len(weights) - 1:
            x = F.gelu(x)
    return x


GATES = ("momentum", "decay", "modulation", "mixture", "spectral_lr")


def _gates_per_chunk(gates, chunks):
    """The per-chunk gates ({name: (N, H, C, ...) or None}) as one {name: (N, H, ...) or None} per chunk. By unbind,
    not x[:, :, c]: the backward of C separate selections would build C zero tensors of the full size (O(C²))."""
    unbound = {name: None if gates.get(name) is None else gates[name].unbind(2) for name in GATES}
    return [{name: None if value is None else value[c] for name, value in unbound.items()} for c in range(chunks)]


def _chunk_step(weights, momenta, surprise, gates):
    """One chunk's update from its surprise U_c: the optional lr modulation and spectral normalisation of U_c, the
    momentum accumulators and the mixture of their orders, the forgetting gate.

    weights: [(N, H, I, O)]; momenta: None or K lists like `weights`; surprise: [(N, H, I, O)]; gates: this chunk's
    `momentum` (N, H) (η_c; unused without momenta), `decay` (N, H) (α_c; None = no forgetting), `modulation`
    (N, H, L_M), `mixture` (N, H, K) (γ_c; None for one order), `spectral_lr` (N, H) (the chunk's mean θ).
    Returns (weights, momenta) after the chunk."""
    if gates["modulation"] is not None:
        surprise = [u * gates["modulation"][..., i, None, None] for i, u in enumerate(surprise)]
    if gates["spectral_lr"] is not None:  # θ̄_c U / ‖U‖₂
        # the spectral norm through an SVD of each (I, O) matrix; eps keeps an all-zero surprise (no real token) at 0
        surprise = [gates["spectral_lr"][..., None, None] * u
                    / (torch.linalg.matrix_norm(u, ord=2)[..., None, None] + 1e-6) for u in surprise]  # fmt: skip
    if momenta is None:
        deltas = surprise
    else:
        eta = gates["momentum"][..., None, None]
        new_momenta, previous = [], surprise
        for order in momenta:
            previous = [eta * s + p for s, p in zip(order, previous, strict=True)]
            new_momenta.append(previous)
        momenta, mixture = new_momenta, gates["mixture"]
        if mixture is None:  # order 1
            deltas = momenta[0]
        else:
            deltas = [sum(mixture[..., k, None, None] * momenta[k][i] for k in range(len(momenta)))
                      for i in range(len(weights))]  # fmt: skip
    if gates["decay"] is None:
        return [w + d for w, d in zip(weights, deltas, strict=True)], momenta
    keep = (1 - gates["decay"])[..., None, None]
    return [keep * w + d for w, d in zip(weights, deltas, strict=True)], momenta


def _chunk_bounds(length, chunk_size):
    return [(start, min(start + chunk_size, length)) for start in range(0, length, chunk_size)]


def naive_neural_memory(queries, keys, values, lrs, weights, momenta, gates, chunk_size, batch_size=None):
    """The readable oracle: a loop over tokens.

    queries, keys, values: (N, H, T, D); lrs: (N, H, T) (θ_t); weights: [(N, H, I, O)] (the state's W); momenta: None
    or K lists like weights; gates: dict of per-chunk tensors, `momentum` (N, H, C) (needed with momenta), and
    optional `decay` (N, H, C), `modulation` (N, H, C, L_M), `mixture` (N, H, C, K), `spectral_lr` (N, H, C).
    `batch_size`: tokens per memory batch (a multiple of chunk_size; None: all T). Returns (retrieved (N, H, T, D),
    weights, momenta)."""
    length = keys.shape[2]
    per_batch = length if batch_size is None else batch_size
    bounds = _chunk_bounds(length, chunk_size)
    chunk_gates = _gates_per_chunk(gates, len(bounds))
    retrieved = []
    grad_enabled = torch.is_grad_enabled()
    with torch.enable_grad():
        start_weights = weights
        for chunk, (start, stop) in enumerate(bounds):
            if start % per_batch == 0:  # a memory batch starts: its surprises are taken at these weights
                # a fresh node (a view): the surprise is ∂ℓ/∂W with the keys and values held fixed, even where they
                # depend on W themselves (MAC retrieves from the same weights before it writes)
                start_weights = [w.view_as(w) if w.requires_grad else w.detach().requires_grad_() for w in weights]
            accumulated = [torch.zeros_like(w) for w in weights]
            for t in range(start, stop):
                retrieved.append(memory_mlp(weights, queries[:, :, t : t + 1]))  # y_t = M_{W_{c-1}}(q_t)
                error = memory_mlp(start_weights, keys[:, :, t : t + 1]) - values[:, :, t : t + 1]
                loss = (lrs[:, :, t] * error.square().mean(dim=(-2, -1))).sum()  # rows are independent: sum = each
                grads = torch.autograd.grad(loss, start_weights, create_graph=grad_enabled)
                accumulated = [a - g for a, g in zip(accumulated, grads, strict=True)]
            weights, momenta = _chunk_step(weights, momenta, accumulated, chunk_gates[chunk])
    retrieved = torch.cat(retrieved, dim=2)
    if not grad_enabled:
        retrieved = retrieved.detach()
        weights = [w.detach() for w in weights]
        momenta = None if momenta is None else [[m.detach() for m in order] for order in momenta]
    return retrieved, weights, momenta


def _chunk_surprises(weights, keys, values, lrs):
    """-Σ_t θ_t ∇_W ℓ(W; k_t, v_t) of every chunk at once, backpropagated by hand through the MLP.

    weights: [(N, H, 1, I, O)] (the memory batch's start weights, shared by its chunks); keys, values: (N, H, C, B, D);
    lrs: (N, H, C, B). Returns [(N, H, C, I, O)]."""
    activations, pre_activations = [keys], []
    x = keys
    for index, weight in enumerate(weights):
        z = x @ weight  # (N, H, C, B, O)
        pre_activations.append(z)
        x = F.gelu(z) if index < len(weights) - 1 else z
        if index < len(weights) - 1:
            activations.append(x)
    # d(θ_t mean_d (y - v)²)/dy = 2 θ_t (y - v) / D
    grad = (2.0 / keys.shape[-1]) * lrs[..., None] * (x - values)
    surprises = [None] * len(weights)
    for index in range(len(weights) - 1, -1, -1):
        surprises[index] = -(activations[index].transpose(-1, -2) @ grad)  # Σ over the chunk's tokens: (.., I, O)
        if index > 0:
            grad = (grad @ weights[index].transpose(-1, -2)) * _gelu_grad(pre_activations[index - 1])
    return surprises


def chunked_neural_memory(queries, keys, values, lrs, weights, momenta, gates, chunk_size, batch_size=None):
    """The fast path, same arguments and results as `naive_neural_memory`: per memory batch, the surprises of all its
    chunks from one batched backward pass, then the (cheap, elementwise) momentum and decay steps chunk by chunk, then
    every chunk's retrieval at once with the weights before it."""
    n, h, length, dim = keys.shape
    bounds = _chunk_bounds(length, chunk_size)
    padded = len(bounds) * chunk_size
    if padded != length:  # a short last chunk: zero-lr padding tokens add nothing to its surprise
        pad = padded - length
        queries, keys, values = (F.pad(x, (0, 0, 0, pad)) for x in (queries, keys, values))
        lrs = F.pad(lrs, (0, pad))
    chunks_per_batch = len(bounds) if batch_size is None else batch_size // chunk_size

    def by_chunk(x):  # (N, H, C·B, ...) -> (N, H, C, B, ...)
        return x.reshape(n, h, -1, chunk_size, *x.shape[3:])

    queries, keys, values, lrs = by_chunk(queries), by_chunk(keys), by_chunk(values), by_chunk(lrs)
    chunk_gates = _gates_per_chunk(gates, len(bounds))
    retrieved = []
    for first in range(0, len(bounds), chunks_per_batch):
        last = min(first + chunks_per_batch, len(bounds))
        surprises = _chunk_surprises([w[:, :, None] for w in weights], keys[:, :, first:last], values[:, :, first:last],
                                     lrs[:, :, first:last])  # fmt: skip
        surprises = list(zip(*(s.unbind(2) for s in surprises), strict=True))  # [chunk][matrix]
        before = []  # the weights each chunk retrieves with: those before it
        for offset, chunk in enumerate(range(first, last)):
            before.append(weights)
            weights, momenta = _chunk_step(weights, momenta, list(surprises[offset]), chunk_gates[chunk])
        stacked = [torch.stack([b[i] for b in before], dim=2) for i in range(len(weights))]  # (N, H, C', I, O)
        retrieved.append(memory_mlp(stacked, queries[:, :, first:last]))  # (N, H, C', B, D)
    retrieved = torch.cat(retrieved, dim=2).reshape(n, h, padded, dim)[:, :, :length]
    return retrieved, weights, momenta


NEURAL_MEMORY_IMPLEMENTATIONS = {"chunked": chunked_neural_memory, "reference": naive_neural_memory}


def neural_memory(queries, keys, values, lrs, weights, momenta, gates, chunk_size, batch_size=None,
                  implementation="chunked"):  # fmt: skip
    """Dispatch to `chunked_neural_memory` (default) or `naive_neural_memory`."""
    return NEURAL_MEMORY_IMPLEMENTATIONS[implementation](
        queries, keys, values, lrs, weights, momenta, gates, chunk_size, batch_size
    )


__all__ = ["chunked_neural_memory", "memory_mlp", "naive_neural_memory", "neural_memory"]
