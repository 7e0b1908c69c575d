"""Parity of the neural memory's update rule with lucidrains' titans-pytorch (`NeuralMemory.store_memories`, pinned
0.5.5, a test-only dependency in the `dev` extra) where the two definitions coincide.

They coincide for: a plain MLP memory (`MemoryMLP`, no residual norm), surprises of every chunk at the weights the
call started from (titans-pytorch's default, our op with `batch_size=None`), per-token learning rates, first-order
momentum and the forgetting gate per chunk from the chunk mean (Eq. 10 and 13: titans-pytorch scans the weights
themselves from the initial ones). They differ elsewhere by design, so those parts are not compared: its spectral
normalisation orthogonalises the momentum (Newton-Schulz; ours divides each chunk's surprise by its spectral norm),
its higher momentum orders can mix in the raw surprise, and its retrieval is shifted by one token.

Given the keys, values, learning rates and momentum gates its own modules compute from a sequence, our
`chunked_neural_memory` must reach its weights after the sequence, and the gradients of those weights with respect
to the sequence must agree."""

import pytest
import torch

from hf_models.titans_ts import chunked_neural_memory, naive_neural_memory


titans_pytorch = pytest.importorskip("titans_pytorch", reason="pip install -e '.[dev]' installs titans-pytorch==0.5.5")


def _reference(seed=0, dim=16, heads=2, dim_head=8, chunk=4):
    from titans_pytorch import NeuralMemory
    from titans_pytorch.memory_models import MemoryMLP

    torch.manual_seed(seed)
    memory = NeuralMemory(dim=dim, chunk_size=chunk, dim_head=dim_head, heads=heads,
                          model=MemoryMLP(dim_head, depth=2, expansion_factor=2), mem_model_norm_add_residual=False,
                          momentum=True, momentum_order=1, qk_rmsnorm=False, pre_rmsnorm=False,
                          default_step_transform_max_lr=0.5)  # fmt: skip
    return memory


def _their_inputs(memory, seq, chunk):
    """The keys, values, learning rates, momentum and forgetting gates titans-pytorch derives from `seq`, in our
    layout."""
    batch, heads = seq.shape[0], memory.heads
    keys = memory.split_kv_heads(memory.to_keys(seq))  # (B, H, T, D)
    values = memory.split_kv_heads(memory.to_values(seq))
    lrs = memory.adaptive_step_transform(memory.to_adaptive_step(seq)).view(batch, heads, -1)  # (B, H, T)
    momentum = memory.to_momentum(memory.reduce_to_chunk_rep(seq, chunk_size=chunk)).sigmoid()  # (1, B·H, C, 1)
    momentum = momentum[0, :, :, 0].view(batch, heads, -1)
    decay = memory.to_decay_factor(memory.reduce_to_chunk_rep(seq, chunk_size=chunk)).sigmoid()  # (B·H, C, 1)
    decay = decay[:, :, 0].view(batch, heads, -1)
    # the initial weights per head (H, I, O), repeated per sequence
    weights = [w.expand(batch, *w.shape) for w in memory.memory_model_parameter_dict.values()]
    return keys, values, lrs, momentum, decay, weights


@pytest.mark.parametrize("op", [chunked_neural_memory, naive_neural_memory], ids=["chunked", "reference"])
@pytest.mark.parametrize("length", [12, 16])
def test_update_rule_matches_titans_pytorch(op, length):
    chunk = 4
    memory = _reference(chunk=chunk)
    seq = torch.randn(2, length, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
    updates, _ = memory.store_memories(seq, return_surprises=False)
    # its "updates" scan the weights from the initial ones: the last is the weights after the last chunk
    theirs = [u[:, -1].unflatten(0, (2, memory.heads)) for u in updates.values()]

    keys, values, lrs, momentum, decay, weights = _their_inputs(memory, seq, chunk)
    momenta = [[torch.zeros_like(w) for w in weights]]
    gates = {"momentum": momentum, "decay": decay}
    _, ours, _ = op(keys, keys, values, lrs, weights, momenta, gates, chunk, None)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert any((a - w).abs().max() > 1e-3 for a, w in zip(ours, weights, strict=True))  # the memory did learn

    probe = [torch.randn(a.shape, generator=torch.Generator().manual_seed(i)) for i, a in enumerate(ours)]
    (grad_ours,) = torch.autograd.grad(sum((a * p).sum() for a, p in zip(ours, probe, strict=True)), seq)
    (grad_theirs,) = torch.autograd.grad(sum((b * p).sum() for b, p in zip(theirs, probe, strict=True)), seq)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-3, atol=1e-5)
