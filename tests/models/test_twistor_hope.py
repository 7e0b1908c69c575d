"""Twistor-HOPE beyond the shared battery: the components' algebra, the fast paths against their per-step references,
causality, the memory as per-sequence state, the bidirectional encoder, the constraint loss and the heads."""

import copy
import math
from pathlib import Path

import pytest
import torch

from hf_models import TwistorHopeConfig, TwistorHopeForCausalLM, TwistorHopeForSequenceClassification, TwistorHopeModel
from hf_models.twistor_hope import (
    AdaptiveMobiusLayer,
    IncidenceAttention,
    MobiusLayer,
    SpinorEmbedding,
    TwistorTitansCell,
    TwistorTitansRecurrent,
    twist,
)
from hf_models.twistor_hope.components_twistor_hope import (
    incidence_residual,
    mobius_mixing_coefficients,
    spinor_phase,
)


TINY = Path(__file__).resolve().parents[2] / "configs" / "models" / "twistor_hope" / "tiny.json"


def tiny_config(**overrides):
    config = TwistorHopeConfig.from_pretrained(str(TINY))
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def pair(model_class=TwistorHopeForCausalLM, seed=0, **overrides):
    """The fused model and a reference-path copy with the same weights, in float64."""
    torch.manual_seed(seed)
    fused = model_class(tiny_config(**overrides)).double()
    reference = model_class(tiny_config(recurrent_implementation="reference", **overrides)).double()
    reference.load_state_dict(fused.state_dict())
    return fused, reference


def ids(batch=2, length=12, seed=0, vocab=96):
    return torch.randint(1, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def assert_grads_equal(first, second, atol=1e-12):
    for (name, a), (_, b) in zip(first.named_parameters(), second.named_parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, atol=atol, rtol=1e-9, msg=name)


# ------------------------------------------------------------------------------------------------ algebra
def test_twist_squares_to_minus_identity_and_is_the_conjugate_swap():
    z = torch.randn(3, 5, 16, dtype=torch.float64)
    torch.testing.assert_close(twist(twist(z)), -z)
    n = 4
    omega = torch.complex(z[..., :n], z[..., n : 2 * n])
    pi = torch.complex(z[..., 2 * n : 3 * n], z[..., 3 * n :])
    twisted = twist(z)
    torch.testing.assert_close(torch.complex(twisted[..., :n], twisted[..., n : 2 * n]), pi.conj())
    torch.testing.assert_close(torch.complex(twisted[..., 2 * n : 3 * n], twisted[..., 3 * n :]), -omega.conj())


def test_mobius_layer_is_a_scaled_rotation():
    """Each cycle is I + c_k T with T² = −I: the norm grows by prod sqrt(1 + c_k²) exactly."""
    layer = MobiusLayer(coupling=0.3, num_cycles=3, progressive=True)
    z = torch.randn(4, 24, dtype=torch.float64)
    growth = math.prod(math.sqrt(1 + c * c) for c in (0.1, 0.2, 0.3))
    torch.testing.assert_close(layer(z).norm(dim=-1), z.norm(dim=-1) * growth)
    assert list(MobiusLayer(0.1, 3, progressive=False).couplings) == [0.1, 0.1, 0.1]


def test_cell_mixing_cycles_fold_into_one_pair():
    omega, pi = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    w, p = omega.clone(), pi.clone()
    for k in range(4):
        c = 0.25 * (k + 1) / 4
        w, p = (1 - c) * w + c * p, (1 - c) * p - c * w
    a, b = mobius_mixing_coefficients(0.25, 4)
    torch.testing.assert_close(w, a * omega + b * pi)
    torch.testing.assert_close(p, a * pi - b * omega)


def test_spinor_embedding_width_and_phase_past_512_positions():
    embedding = SpinorEmbedding(vocab_size=10, size=6).double()
    tokens = torch.tensor([[3, 3]])
    positions = torch.tensor([[0, 700]])
    out = embedding(tokens, positions)
    assert out.shape == (1, 2, 4 * 6)  # 4·size: ω and π, each [re | im] of `size` numbers
    phase = spinor_phase(torch.tensor(700), 6, torch.float64)
    frequencies = [10000 ** (-2 * i / 6) for i in range(3)]
    expected_re = [f(700 * fr) for fr in frequencies for f in (math.sin, math.cos)]
    expected_im = [v for fr in frequencies for v in (math.cos(700 * fr), -math.sin(700 * fr))]
    torch.testing.assert_close(phase, torch.tensor(expected_re + expected_im, dtype=torch.float64))
    # the phase is added to both ω and π of the token at 700 (no silent cut-off past 512)
    omega_table = embedding.omega.weight[3]
    torch.testing.assert_close(out[0, 1, :12], omega_table + phase)
    torch.testing.assert_close(out[0, 1, 12:], embedding.pi.weight[3] + phase)


# ------------------------------------------------------------------------------------------------ incidence attention
@pytest.mark.parametrize("causal", [False, True])
def test_incidence_attention_sdpa_equals_the_eager_score_matrix(causal):
    torch.manual_seed(0)
    attention = IncidenceAttention(dim=32, num_heads=4, causal=causal).double()
    with torch.no_grad():
        attention.mobius_weight.fill_(0.7)  # a large cross term, so a wrong form shows
    x = torch.randn(2, 9, 32, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :3] = 0
    outputs, grads = [], []
    for implementation in ("sdpa", "eager"):
        out = attention(x, attention_mask=mask, implementation=implementation)
        outputs.append(torch.cat([out[0], out[1, 3:]]))  # row 1's padding queries (causal: no key at all) left out
        grads.append(torch.autograd.grad(outputs[-1].pow(2).sum(), [x, attention.mobius_weight]))
    torch.testing.assert_close(outputs[0], outputs[1])
    torch.testing.assert_close(grads[0], grads[1])


def test_incidence_attention_cross_term_is_the_written_formula():
    torch.manual_seed(1)
    attention = IncidenceAttention(dim=8, num_heads=1).double()
    with torch.no_grad():
        attention.mobius_weight.fill_(-0.4)
    x = torch.randn(1, 3, 8, dtype=torch.float64)
    q, k, v = attention.q_proj(x)[0], attention.k_proj(x)[0], attention.v_proj(x)[0]
    score = q @ k.T - 0.4 * (q[:, :4] @ k[:, 4:].T + q[:, 4:] @ k[:, :4].T)
    expected = attention.o_proj((score / math.sqrt(8)).softmax(-1) @ v)
    torch.testing.assert_close(attention(x, implementation="sdpa")[0], expected)
    with pytest.raises(ValueError, match="heads of even size"):
        IncidenceAttention(dim=12, num_heads=4)


# ------------------------------------------------------------------------------------------------ fast == reference
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize(
    "overrides",
    [{}, {"use_multiscale_evolution": False, "use_adaptive_evolution_rate": False, "constraint_type": "learned"}],
    ids=["default", "single-scale-fixed-rate-learned-constraint"],
)
def test_fused_path_equals_the_per_step_reference(padded, overrides):
    """Outputs, both losses and every gradient of the hoisted path equal the original's loop structure."""
    fused, reference = pair(**overrides)
    fused.train()
    reference.train()
    tokens = ids(length=14)
    mask = None
    if padded:
        mask = torch.ones_like(tokens)
        mask[0, :4] = 0
    results = []
    for model in (fused, reference):
        out = model(tokens, attention_mask=mask, labels=tokens)
        out.loss.backward()
        results.append(out)
    torch.testing.assert_close(results[0].logits, results[1].logits, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(results[0].constraint_loss, results[1].constraint_loss)
    assert results[0].constraint_loss > 0
    assert_grads_equal(fused, reference, atol=1e-11)


@pytest.mark.parametrize("padded", [False, True])
def test_cell_scan_backward_equals_autograd_and_the_reference(padded):
    """The hand-written backward of the default cell (`_CellScan`) against autograd through the same hoisted step
    and through the per-step reference: outputs, the last state, and gradients of the inputs, the initial state and
    every weight, with weights large enough that every nonlinearity is off its linear range."""
    torch.manual_seed(0)
    cell = TwistorTitansCell(32, 16, tiny_config()).double()
    assert cell.scan_supported
    for parameter in cell.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    x = torch.randn(3, 9, 32, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, 16, dtype=torch.float64, requires_grad=True)
    mask = None
    if padded:
        mask = torch.ones(3, 9)
        mask[0, :3] = 0
        mask[2, 5] = 0
    weights = torch.linspace(-1, 1, 16, dtype=torch.float64)
    results = []
    for run in (cell.forward, cell.forward_autograd, cell.forward_reference):
        outputs, last = run(x, h0, mask)
        loss = (outputs * weights).pow(2).sum() + last.sin().sum()
        results.append((outputs, last, torch.autograd.grad(loss, [x, h0, *cell.parameters()])))
    for other in results[1:]:
        torch.testing.assert_close(results[0][0], other[0], atol=1e-13, rtol=1e-12)
        torch.testing.assert_close(results[0][1], other[1], atol=1e-13, rtol=1e-12)
        for mine, theirs in zip(results[0][2], other[2], strict=True):
            torch.testing.assert_close(mine, theirs, atol=1e-12, rtol=1e-10)


def test_cell_scan_runs_outside_autocast_in_float32():
    """Under bf16 autocast (mixed-precision training) the scan computes in float32 and returns float32."""
    torch.manual_seed(0)
    cell = TwistorTitansCell(32, 16, tiny_config())
    x = torch.randn(2, 5, 32)
    expected, _ = cell(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs, last = cell(x)
    assert outputs.dtype == torch.float32 and torch.equal(outputs, expected)


def test_bidirectional_fused_equals_reference():
    fused, reference = pair(TwistorHopeModel, bidirectional=True)
    tokens = ids()
    mask = torch.ones_like(tokens)
    mask[1, -3:] = 0  # right padding, as an encoder batch has it
    outputs = [m(tokens, attention_mask=mask).last_hidden_state for m in (fused, reference)]
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-12, rtol=1e-10)


def test_adaptive_mobius_running_mean_equals_the_token_loop():
    torch.manual_seed(0)
    layer = AdaptiveMobiusLayer(16).double()
    x = torch.randn(2, 10, 16, dtype=torch.float64)
    mask = torch.ones(2, 10)
    mask[0, :2] = 0
    state = (torch.randn(2, 16, dtype=torch.float64), torch.full((2, 1), 3.0, dtype=torch.float64))
    fast, fast_state = layer(x, mask, state)
    slow, slow_state = layer.forward_reference(x, mask, state)
    torch.testing.assert_close(fast[1], slow[1])
    torch.testing.assert_close(fast[0, 2:], slow[0, 2:])
    torch.testing.assert_close(fast_state, slow_state)


# ------------------------------------------------------------------------------------------------ causality and state
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_a_later_token_never_changes_earlier_logits(mode):
    """The original's adaptive coupling averaged the whole sequence, so the last token moved every output."""
    torch.manual_seed(0)
    model = TwistorHopeForCausalLM(tiny_config(hidden_dropout=0.1)).double()
    model.train(mode == "train")
    tokens = ids(length=16)
    for cut in (3, 9, 15):
        changed = tokens.clone()
        changed[:, cut] = changed[:, cut] % 95 + 1
        torch.manual_seed(5)
        before = model(tokens).logits
        torch.manual_seed(5)
        after = model(changed).logits
        assert torch.equal(before[:, :cut], after[:, :cut]), cut
        assert not torch.allclose(before[:, cut:], after[:, cut:])


def test_memory_is_per_sequence_state_with_distinct_slots():
    torch.manual_seed(0)
    model = TwistorHopeForCausalLM(tiny_config(num_memories=3, memory_update_periods=[1, 2, 4])).double().train()
    weights_before = {k: v.clone() for k, v in model.state_dict().items()}
    tokens = ids(batch=3, length=12)
    out = model(tokens, use_cache=True)
    memory = out.cache.memory[0]  # (B, K, D)
    assert memory.shape == (3, 3, model.config.twistor_size)
    for row in range(3):  # the K slots differ (the original wrote one vector into all of them)
        assert torch.cdist(memory[row], memory[row]).triu(1)[torch.triu_indices(3, 3, 1).unbind()].min() > 1e-6
    # rows never share memory: row 0 alone gives row 0's outputs
    alone = model(tokens[:1]).logits
    torch.testing.assert_close(alone, out.logits[:1])
    # a training forward writes nothing into the weights or buffers
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights_before[key]), key
    # the slow slot (period 4) is written 3 times in 12 tokens, the fast one 12 times: their states differ in age
    assert out.cache.memory[3].tolist() == [12, 12, 12]


def test_memory_slots_are_written_at_their_own_periods():
    """Slot k changes only after every C_k-th token of its row."""
    torch.manual_seed(0)
    model = TwistorHopeModel(tiny_config(num_memories=2, memory_update_periods=[1, 3])).double().eval()
    tokens = ids(batch=1, length=7)
    cache = None
    memories = []
    for t in range(7):
        cache = model(tokens[:, t : t + 1], cache=cache, use_cache=True).cache
        memories.append(cache.memory[0][0].clone())
    changed_slow = [not torch.equal(memories[t][1], memories[t - 1][1]) for t in range(1, 7)]
    changed_fast = [not torch.equal(memories[t][0], memories[t - 1][0]) for t in range(1, 7)]
    assert changed_fast == [True] * 6
    assert changed_slow == [False, True, False, False, True, False]  # after tokens 3 and 6 (t = 2, 5)


def test_long_sequences_run_one_recurrence_without_resets():
    """The original reset the state every 512 tokens; here 600 tokens in one pass equal the same tokens fed in
    chunks of 100 with the state carried, and the fused path equals the per-step reference at that length."""
    torch.manual_seed(0)
    config = dict(max_position_embeddings=1024)
    model = TwistorHopeForCausalLM(tiny_config(**config)).double().eval()
    tokens = ids(batch=1, length=600)
    full = model(tokens).logits
    cache, chunks = None, []
    for start in range(0, 600, 100):
        out = model(tokens[:, start : start + 100], cache=cache, use_cache=True)
        cache = out.cache
        chunks.append(out.logits)
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-12, rtol=1e-10)
    reference = TwistorHopeForCausalLM(tiny_config(recurrent_implementation="reference", **config)).double().eval()
    reference.load_state_dict(model.state_dict())
    torch.testing.assert_close(reference(tokens[:, :520]).logits, full[:, :520], atol=1e-12, rtol=1e-10)


def test_phase_period_reads_later_positions_with_the_phases_of_earlier_ones():
    torch.manual_seed(0)
    model = TwistorHopeForCausalLM(tiny_config(phase_period=8)).eval()
    tokens = ids(length=20)
    wrapped = (torch.arange(20) % 8)[None].expand(2, -1)
    plain = TwistorHopeForCausalLM(tiny_config()).eval()
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(tokens).logits, plain(tokens, position_ids=wrapped).logits)
    assert not torch.allclose(model(tokens).logits, plain(tokens).logits)
    with pytest.raises(ValueError, match="phase_period=0 is invalid"):
        tiny_config(phase_period=0).__class__(**{**tiny_config().to_dict(), "phase_period": 0})


def test_decoding_state_has_a_fixed_size():
    """O(1) work per new token: the state does not grow with the position."""
    torch.manual_seed(0)
    model = TwistorHopeForCausalLM(tiny_config()).eval()
    out = model(ids(batch=2, length=5), use_cache=True)
    shapes = [tuple(t.shape) for t in out.cache.tensors()]
    for t in range(30):
        out = model(ids(batch=2, length=1, seed=t), cache=out.cache, use_cache=True)
    assert [tuple(t.shape) for t in out.cache.tensors()] == shapes
    assert out.cache.get_seq_length() == 35


def test_beam_search_reorders_the_state():
    torch.manual_seed(0)
    model = TwistorHopeForCausalLM(tiny_config()).eval()
    prompt = ids(batch=2, length=5)
    cached = model.generate(prompt, max_new_tokens=8, num_beams=3, do_sample=False)
    uncached = model.generate(prompt, max_new_tokens=8, num_beams=3, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    cache = model(prompt, use_cache=True).cache
    before = [t.clone() for t in cache.tensors()]
    cache.reorder_cache(torch.tensor([1, 0]))
    for old, new in zip(before, cache.tensors(), strict=True):
        assert torch.equal(new, old.flip(0))


# ------------------------------------------------------------------------------------------------ bidirectional
def test_bidirectional_layers_read_the_previous_layer_in_both_directions_aligned():
    """Each layer is [forward cell(x), backward cell(x reversed) reversed] on the previous layer's output x (the
    original fed every backward cell the raw input, misaligned, and crashed past one layer); in one layer the forward
    half at t reads x[:t+1] only and the backward half x[t:] only."""
    torch.manual_seed(0)
    recurrent = TwistorTitansRecurrent(tiny_config(bidirectional=True, num_recurrent_layers=3)).double().eval()
    n = recurrent.forward_cells[0].hidden_size
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    out, _ = recurrent(x)
    assert out.shape == (2, 9, 2 * n)
    expected = x
    for forward, backward in zip(recurrent.forward_cells, recurrent.backward_cells, strict=True):
        expected = torch.cat([forward(expected)[0], backward(expected.flip(1))[0].flip(1)], dim=-1)
    torch.testing.assert_close(out, expected)

    one = TwistorTitansRecurrent(tiny_config(bidirectional=True, num_recurrent_layers=1)).double().eval()
    base, _ = one(x)
    changed = x.clone()
    changed[:, 4] += 1.0
    moved, _ = one(changed)
    assert torch.equal(moved[:, :4, :n], base[:, :4, :n]) and torch.equal(moved[:, 5:, n:], base[:, 5:, n:])
    assert not torch.allclose(moved[:, 5:, :n], base[:, 5:, :n]) and not torch.allclose(
        moved[:, :4, n:], base[:, :4, n:]
    )


def test_causal_lm_refuses_bidirectional_and_encoder_refuses_a_cache():
    with pytest.raises(ValueError, match="bidirectional=True is invalid for TwistorHopeForCausalLM"):
        TwistorHopeForCausalLM(tiny_config(bidirectional=True))
    encoder = TwistorHopeModel(tiny_config(bidirectional=True)).eval()
    out = encoder(ids())
    assert out.cache is None
    with pytest.raises(ValueError, match="takes no cache"):
        encoder(ids(), cache=TwistorHopeForCausalLM(tiny_config()).eval()(ids(), use_cache=True).cache)


# ------------------------------------------------------------------------------------------------ losses and flags
def test_incidence_residual_is_zero_exactly_on_the_incidence_relation():
    omega = torch.tensor([[1.0, 0.0, 2.0, 0.0]])
    pi = torch.tensor([[0.0, 3.0, 0.0, 1.0]])  # Re⟨ω, π⟩ = 0: ω·π* + π·ω* = 0
    assert incidence_residual(torch.cat([omega, pi], -1)).item() == 0.0
    assert incidence_residual(torch.cat([omega, omega], -1)).item() == pytest.approx(1.0)


def test_training_loss_is_lm_plus_constraint_and_eval_loss_is_lm():
    torch.manual_seed(0)
    model = TwistorHopeForCausalLM(tiny_config())
    tokens = ids()
    model.train()
    out = model(tokens, labels=tokens)
    torch.testing.assert_close(out.loss, out.lm_loss + out.constraint_loss)
    model.eval()
    out = model(tokens, labels=tokens)
    assert torch.equal(out.loss, out.lm_loss) and out.constraint_loss > 0


def test_level_constraint_weight_follows_training_progress():
    model = TwistorHopeForCausalLM(tiny_config(num_nested_levels=3, level_constraint_weights=[0.01, 0.05]))
    assert model.model.level_constraint_weight() == pytest.approx(0.05)  # outside a run: the end weight
    model.set_training_progress(0.0)
    assert model.model.level_constraint_weight() == pytest.approx(0.01)
    model.set_training_progress(0.5)
    assert model.model.level_constraint_weight() == pytest.approx(0.03)
    assert "training_progress" not in model.state_dict()


def test_a_reloaded_model_has_the_end_weight_and_the_same_losses(tmp_path):
    """from_pretrained restores everything the losses read (a non-persistent buffer would come back uninitialised)."""
    torch.manual_seed(0)
    model = TwistorHopeForCausalLM(tiny_config(num_nested_levels=3)).eval()
    model.save_pretrained(tmp_path)
    loaded = TwistorHopeForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.model.training_progress == 1.0
    tokens = ids()
    expected, again = model(tokens, labels=tokens), loaded(tokens, labels=tokens)
    torch.testing.assert_close(again.constraint_loss, expected.constraint_loss)
    torch.testing.assert_close(again.logits, expected.logits)


def test_faithful_train_scaling_is_only_behind_its_flag():
    torch.manual_seed(0)
    tokens = ids()
    for flag in (False, True):
        model = TwistorHopeForCausalLM(tiny_config(faithful_train_scaling=flag)).double()
        train = model.train()(tokens).logits
        evaluation = model.eval()(tokens).logits
        assert torch.allclose(train, evaluation) != flag
        assert ("model.block.self_modify_weight" in model.state_dict()) == flag


# ------------------------------------------------------------------------------------------------ heads
def test_sequence_classifier_pools_padded_rows_like_unpadded_ones():
    for bidirectional in (False, True):
        torch.manual_seed(0)
        model = TwistorHopeForSequenceClassification(tiny_config(bidirectional=bidirectional, num_labels=3)).eval()
        tokens = ids(batch=2, length=10)
        mask = torch.ones_like(tokens)
        if bidirectional:
            mask[1, 7:] = 0
            alone = model(tokens[1:, :7]).logits
        else:
            mask[1, :3] = 0
            alone = model(tokens[1:, 3:]).logits
        torch.testing.assert_close(model(tokens, attention_mask=mask).logits[1:], alone, atol=1e-5, rtol=1e-5)
        out = model(tokens, labels=torch.tensor([0, 2]))
        assert out.loss > 0
        with pytest.raises(
            ValueError, match=r"labels must be class ids in \[0, num_labels=3\); got values in \[0, 3\]"
        ):
            model(tokens, labels=torch.tensor([0, 3]))
        with pytest.raises(ValueError, match=r"labels must have shape \(batch,\) = \(2,\); got \(1,\)"):
            model(tokens, labels=torch.tensor([0]))


def test_sequence_classifier_trains():
    torch.manual_seed(0)
    model = TwistorHopeForSequenceClassification(tiny_config(bidirectional=True, num_labels=2))
    tokens = ids(batch=8, length=8)
    labels = (tokens[:, 0] > 48).long()  # the class is visible in the first token
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = model(tokens, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_presets_build_with_the_documented_parameter_counts():
    presets = TINY.parent
    counts = {}
    for name in ("small", "medium", "recommended", "large"):
        config = TwistorHopeConfig.from_pretrained(str(presets / f"{name}.json"))
        with torch.device("meta"):
            model = TwistorHopeForCausalLM(config) if not config.bidirectional else TwistorHopeModel(config)
        counts[name] = sum(p.numel() for p in model.parameters())
    readme = (TINY.parents[3] / "README.md").read_text(encoding="utf-8")
    for name, count in counts.items():
        assert f"| {name} | {count:,} |" in readme, (name, count)
    assert counts["small"] < counts["medium"] < counts["recommended"] < counts["large"]


def test_config_copy_is_independent():
    config = tiny_config()
    copied = copy.deepcopy(config)
    copied.memory_update_periods.append(9)
    assert config.memory_update_periods == [1, 3]
