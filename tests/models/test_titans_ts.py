"""Titans-TS: the neural memory's chunked form against its token-by-token oracle (outputs and every gradient), that it
learns at test time, the state carried across windows, scaling, causality and the backbone's input checks."""

import pytest
import torch

from hf_models import TitansTsConfig, TitansTsForPrediction, TitansTsMemoryState, TitansTsModel
from hf_models.titans_ts import chunked_neural_memory, memory_mlp, naive_neural_memory


TINY = "configs/models/titans_ts/tiny.json"
F64 = torch.float64


def tiny(**overrides):
    config = TitansTsConfig.from_pretrained(TINY)
    return TitansTsConfig(**{**config.to_dict(), **overrides})


def _memory_inputs(seed, n=2, heads=2, length=7, dim=3, depth=2, orders=2, chunk=2, modulation=True, spectral=True,
                   decay=True):  # fmt: skip
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=generator, dtype=F64) * scale).requires_grad_()

    def rand(*shape):
        return torch.rand(*shape, generator=generator, dtype=F64).requires_grad_()

    chunks = -(-length // chunk)
    sizes = [dim] + [2 * dim] * (depth - 1) + [dim]
    weights = [randn(n, heads, sizes[i], sizes[i + 1], scale=sizes[i] ** -0.5) for i in range(depth)]
    momenta = [[randn(n, heads, sizes[i], sizes[i + 1], scale=0.1) for i in range(depth)] for _ in range(orders)]
    gates = {"momentum": rand(n, heads, chunks), "decay": rand(n, heads, chunks) if decay else None}
    if modulation:
        gates["modulation"] = rand(n, heads, chunks, depth)
    if orders > 1:
        gates["mixture"] = rand(n, heads, chunks, orders)
    if spectral:
        gates["spectral_lr"] = rand(n, heads, chunks)
    sequence = [randn(n, heads, length, dim) for _ in range(3)]
    lrs = rand(n, heads, length)
    return sequence, lrs, weights, (momenta if orders else None), gates


def _leaves(sequence, lrs, weights, momenta, gates):
    leaves = [*sequence, lrs, *weights, *(m for order in momenta or [] for m in order)]
    return leaves + [g for g in gates.values() if g is not None]


@pytest.mark.parametrize(
    "case",
    [
        {},
        {"spectral": False, "modulation": False},
        {"depth": 3, "chunk": 3, "length": 8},
        {"orders": 0, "decay": False, "modulation": False, "spectral": False},
        {"orders": 1, "depth": 1, "spectral": False},
        {"chunk": 1, "length": 5},
    ],
)
@pytest.mark.parametrize("batch_size", [None, "two chunks"])
def test_chunked_memory_equals_the_token_by_token_oracle(case, batch_size):
    """Retrievals, final weights and momenta, and the gradient of every input (float64), at lengths that are not
    multiples of the chunk size, with one memory batch or memory batches of two chunks."""
    chunk = case.get("chunk", 2)
    batch = None if batch_size is None else 2 * chunk
    inputs = _memory_inputs(0, **case)
    results = []
    for op in (naive_neural_memory, chunked_neural_memory):
        sequence, lrs, weights, momenta, gates = inputs
        retrieved, new_weights, new_momenta = op(*sequence, lrs, weights, momenta, gates, chunk, batch)
        outputs = [retrieved, *new_weights, *(m for order in new_momenta or [] for m in order)]
        probe = sum((o * torch.linspace(-1, 1, o.numel(), dtype=F64).view_as(o)).sin().sum() for o in outputs)
        grads = torch.autograd.grad(probe, _leaves(*inputs), allow_unused=True)
        results.append((outputs, grads))
    (reference, reference_grads), (fast, fast_grads) = results
    for a, b in zip(reference, fast, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    for a, b in zip(reference_grads, fast_grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-11)
    assert all(g.abs().sum() > 0 for g in fast_grads[:4])  # queries, keys, values, learning rates
    gates = inputs[4]
    used = [g for name, g in gates.items() if g is not None and (name != "momentum" or case.get("orders", 2))]
    gate_grads = dict(zip(map(id, _leaves(*inputs)), fast_grads, strict=True))
    assert all(gate_grads[id(g)] is not None and gate_grads[id(g)].abs().sum() > 0 for g in used)


def test_memory_learns_at_test_time():
    """Written with the same key -> value pairs over and over (one chunk per round, each chunk's surprise at the
    weights the previous one left), the memory's associative loss on them falls far below that of its initial
    weights, and the retrieval of a key approaches its value: the update rule descends ℓ."""
    generator = torch.Generator().manual_seed(0)
    n, heads, dim, pairs = 1, 1, 8, 4
    keys = torch.nn.functional.normalize(torch.randn(n, heads, pairs, dim, generator=generator), dim=-1)
    values = torch.randn(n, heads, pairs, dim, generator=generator)
    repeats = 60
    keys_seq, values_seq = keys.repeat(1, 1, repeats, 1), values.repeat(1, 1, repeats, 1)
    weights = [torch.randn(n, heads, dim, 2 * dim, generator=generator) / dim**0.5,
               torch.randn(n, heads, 2 * dim, dim, generator=generator) / (2 * dim) ** 0.5]  # fmt: skip
    chunks = repeats * pairs // pairs
    gates = {"momentum": torch.full((n, heads, chunks), 0.5), "decay": torch.zeros(n, heads, chunks)}
    lrs = torch.full((n, heads, repeats * pairs), 0.5)
    momenta = [[torch.zeros_like(w) for w in weights]]
    retrieved, learned, _ = chunked_neural_memory(
        keys_seq, keys_seq, values_seq, lrs, weights, momenta, gates, pairs, batch_size=pairs
    )

    def loss(w):
        return (memory_mlp(w, keys) - values).square().mean().item()

    assert loss(learned) < 0.05 * loss(weights)
    first, last = retrieved[:, :, :pairs], retrieved[:, :, -pairs:]  # retrievals before the first write, and late
    assert (last - values).square().mean() < 0.05 * (first - values).square().mean()


def test_reference_implementation_gives_the_models_outputs_and_gradients():
    """The whole forecaster with `memory_implementation="reference"` equals the chunked default (float64), with two
    segments per window (the memory carried between them) and memory batches of two chunks."""
    torch.manual_seed(0)
    config = tiny(memory_batch_size=4, memory_spectral_norm_surprises=True)
    fast = TitansTsForPrediction(config).double()
    slow = TitansTsForPrediction(tiny(memory_batch_size=4, memory_spectral_norm_surprises=True,
                                      memory_implementation="reference")).double()  # fmt: skip
    slow.load_state_dict(fast.state_dict())
    past = torch.randn(2, config.context_length, config.num_input_channels, dtype=F64)
    future = torch.randn(2, config.prediction_length, config.num_input_channels, dtype=F64)
    out_fast, out_slow = fast(past, future_values=future), slow(past, future_values=future)
    torch.testing.assert_close(out_fast.prediction_outputs, out_slow.prediction_outputs, rtol=1e-10, atol=1e-12)
    out_fast.loss.backward()
    out_slow.loss.backward()
    for (name, a), b in zip(fast.named_parameters(), slow.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-7, atol=1e-14, msg=name)


def test_state_is_carried_across_windows_and_changes_the_forecast():
    """The state after one window starts the next: it holds what the memory wrote (it differs from a fresh state),
    it changes the forecast, a detached copy gives the same forecast without history, and `seen_tokens` counts."""
    torch.manual_seed(0)
    config = tiny()
    model = TitansTsForPrediction(config).eval()
    first, second = torch.randn(2, 2, config.context_length, config.num_input_channels).unbind(0)
    with torch.no_grad():
        state = model(first, use_cache=True).memory_state
        assert isinstance(state, TitansTsMemoryState) and state.seen_tokens == config.num_patches
        fresh = model.model.initial_memory_state(2)
        assert not torch.allclose(state.layers[0][0][0], fresh.layers[0][0][0])  # the memory wrote in eval/no_grad
        alone = model(second).prediction_outputs
        carried = model(second, memory_state=state, use_cache=True)
        assert carried.memory_state.seen_tokens == 2 * config.num_patches
        assert not torch.allclose(carried.prediction_outputs, alone)
        torch.testing.assert_close(model(second, memory_state=state.detach()).prediction_outputs,
                                   carried.prediction_outputs)  # fmt: skip
    assert model(first).memory_state is None  # only with use_cache=True


def test_state_errors_name_the_problem():
    torch.manual_seed(0)
    model = TitansTsForPrediction(tiny()).eval()
    past = torch.randn(2, model.config.context_length, model.config.num_input_channels)
    state = model(past, use_cache=True).memory_state
    with pytest.raises(ValueError, match=r"memory_state is for batch 2; past_values has batch 1"):
        model(past[:1], memory_state=state)
    with pytest.raises(ValueError, match=r"memory_state must be a TitansTsMemoryState .*got tuple"):
        model(past, memory_state=(1, 2))
    other = TitansTsForPrediction(tiny(neural_memory_layers=[1])).eval()
    with pytest.raises(ValueError, match=r"memory_state holds blocks \[0, 1\] .* memories in blocks \[1\]"):
        other(past, memory_state=state)


def test_forecast_follows_an_affine_change_of_the_series():
    """With `scaling="std"` the model sees each window in its own units: forecast(a·x + b) = a·forecast(x) + b."""
    torch.manual_seed(0)
    model = TitansTsForPrediction(tiny()).double().eval()
    past = torch.randn(2, model.config.context_length, model.config.num_input_channels, dtype=F64)
    with torch.no_grad():
        base = model(past).prediction_outputs
        moved = model(3.0 * past + 5.0).prediction_outputs
    # up to the 1e-5 added to the variance (PatchTST's minimum scale), which does not scale with the series
    torch.testing.assert_close(moved, 3.0 * base + 5.0, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(TitansTsForPrediction(tiny(scaling=None)).double()(3.0 * past + 5.0).prediction_outputs,
                              3.0 * base + 5.0, atol=1e-2)  # fmt: skip


@pytest.mark.parametrize(("norm_type", "mode"), [("layernorm", "train"), ("layernorm", "eval"), ("batchnorm", "eval")])
def test_backbone_is_causal(norm_type, mode):
    """Changing the last patch changes no earlier patch's hidden state (attention is causal, each chunk retrieves
    from the memory before it), in training and eval mode (with BatchNorm in eval mode: in training its batch
    statistics mix every token of the batch, as PatchTST's do)."""
    torch.manual_seed(0)
    config = tiny(segment_length=8, norm_type=norm_type)
    model = TitansTsModel(config).double().train(mode == "train")
    values = torch.randn(2, 16, config.num_input_channels, dtype=F64)
    changed = values.clone()
    changed[:, -1] += 10.0
    with torch.no_grad():
        a, b = model(values).last_hidden_state, model(changed).last_hidden_state
    torch.testing.assert_close(a[:, :-1], b[:, :-1], rtol=0, atol=0)
    assert not torch.allclose(a[:, -1], b[:, -1])


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_backbone_without_causality_sees_its_whole_segment_and_no_later_one(mode):
    """`is_causal=False`: changing the last patch changes every hidden state of its segment (an encoder's attention)
    and none of an earlier segment (segments still see the past only through the memory)."""
    torch.manual_seed(0)
    config = tiny(segment_length=4, is_causal=False)
    model = TitansTsModel(config).double().train(mode == "train")
    values = torch.randn(2, 16, config.num_input_channels, dtype=F64)  # 8 patches: two segments of 4
    changed = values.clone()
    changed[:, -1] += 10.0
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(values).last_hidden_state
        torch.manual_seed(1)
        b = model(changed).last_hidden_state
    torch.testing.assert_close(a[:, :4], b[:, :4], rtol=0, atol=0)
    assert all(not torch.allclose(a[:, i], b[:, i]) for i in range(4, 8))


def test_batchnorm_blocks_are_post_norm_with_running_statistics():
    """`norm_type="batchnorm"`: each sublayer's sum is batch-normalised (PatchTST's post-norm), there is no final
    norm; training moves the running statistics, and in eval mode a window's forecast does not depend on the others
    of its batch while in training it does."""
    torch.manual_seed(0)
    config = tiny(norm_type="batchnorm")
    model = TitansTsForPrediction(config).double()
    block = model.model.layers[0]
    assert isinstance(model.model.norm, torch.nn.Identity) and not block.pre_norm
    assert isinstance(block.attention_norm.norm, torch.nn.BatchNorm1d)
    past = torch.randn(3, config.context_length, config.num_input_channels, dtype=F64)
    running = block.ffn_norm.norm.running_mean.clone()
    model.train()
    with torch.no_grad():
        trained = model(past).prediction_outputs
        assert not torch.allclose(model(past[:1]).prediction_outputs, trained[:1])
    assert not torch.allclose(block.ffn_norm.norm.running_mean, running)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(past[:1]).prediction_outputs, model(past).prediction_outputs[:1])
    # the hidden states are what the last post-norm sublayer left: per feature over the batch's tokens, mean 0 and
    # variance 1 in training (the BN's affine weights start at 1 and 0)
    model.train()
    with torch.no_grad():
        hidden = model.model(model._scale(past)[0]).last_hidden_state.flatten(0, 2)
    torch.testing.assert_close(hidden.mean(0), torch.zeros_like(hidden[0]), rtol=0, atol=1e-10)
    torch.testing.assert_close(hidden.var(0, unbiased=False), torch.ones_like(hidden[0]), rtol=0, atol=1e-4)


@pytest.mark.parametrize("overrides", [{"is_causal": False}, {"norm_type": "batchnorm"}])
def test_backbone_fed_in_segments_equals_one_pass(overrides):
    """Without causality, and with BatchNorm in eval mode (running statistics), the state carried across two chunks
    that end on a segment boundary gives one pass's hidden states."""
    torch.manual_seed(0)
    model = TitansTsModel(tiny(segment_length=4, **overrides)).double()
    model.train()
    with torch.no_grad():  # move any running statistics away from their start
        model(torch.randn(4, 16, model.config.num_input_channels, dtype=F64) * 3 + 1)
    model.eval()
    values = torch.randn(2, 16, model.config.num_input_channels, dtype=F64)
    with torch.no_grad():
        whole = model(values).last_hidden_state
        first = model(values[:, :8], use_cache=True)
        second = model(values[:, 8:], memory_state=first.memory_state).last_hidden_state
    torch.testing.assert_close(torch.cat([first.last_hidden_state, second], dim=1), whole)


def test_backbone_input_errors():
    model = TitansTsModel(tiny()).eval()
    channels = model.config.num_input_channels
    with pytest.raises(ValueError, match=r"past_values has 1 time steps, fewer than one patch \(patch_length=2\)"):
        model(torch.randn(2, 1, channels))
    with pytest.raises(ValueError, match=rf"past_values must have {channels} along channels"):
        model(torch.randn(2, 8, channels + 1))
    with pytest.raises(ValueError, match="past_values must be a float tensor"):
        model(torch.ones(2, 8, channels, dtype=torch.long))
    bad = torch.randn(2, 8, channels)
    bad[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="past_values contains NaN"):
        model(bad)


def test_patches_come_from_the_end_of_the_context():
    """(context - patch) // stride + 1 patches; the oldest values that fill no patch are dropped (PatchTST's rule)."""
    config = tiny(context_length=17, patch_length=4, patch_stride=3)
    assert config.num_patches == 5
    model = TitansTsModel(config)
    values = torch.arange(17.0).view(1, 17, 1).expand(1, 17, config.num_input_channels)
    patches = model.patchify(values)
    assert patches.shape == (config.num_input_channels, 5, 4)
    assert patches[0, 0].tolist() == [1.0, 2.0, 3.0, 4.0] and patches[0, -1].tolist() == [13.0, 14.0, 15.0, 16.0]


def test_mixed_precision_keeps_the_memory_in_float32():
    """Under bf16 autocast (what training uses on a CPU or GPU with bf16) the attention and feed-forward layers run in
    bf16, the memory outside autocast: its state stays float32, the loss and every gradient are finite, and the
    forecast is close to the float32 one."""
    torch.manual_seed(0)
    model = TitansTsForPrediction(tiny())
    past = torch.randn(2, model.config.context_length, model.config.num_input_channels)
    future = torch.randn(2, model.config.prediction_length, model.config.num_input_channels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(past, future_values=future, use_cache=True)
    assert all(w.dtype == torch.float32 for w in out.memory_state.layers[0][0])
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        reference = model(past).prediction_outputs
    torch.testing.assert_close(out.prediction_outputs.float(), reference, atol=0.1, rtol=0.05)
