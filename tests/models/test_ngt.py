"""NGT-specific tests: fast path vs reference, cutoffs, kernels, regulariser, diagnostics, autocast and the cache."""

import math

import pytest
import torch
import torch.nn.functional as F
from model_specs import SPECS

from hf_models import NgtConfig, NgtForCausalLM
from hf_models.ngt import ops_ngt as ops
from hf_models.ngt.modeling_ngt import NgtGravityAttention


SPEC = next(s for s in SPECS if s.package == "ngt")
TOL = {"rtol": 1e-4, "atol": 1e-5}


def _config(**overrides):  # structural overrides must go through __init__, not setattr after loading
    return NgtConfig(**{**SPEC.load_config().to_dict(), **overrides})


def _model(seed=0, **overrides):
    torch.manual_seed(seed)
    return NgtForCausalLM(_config(**overrides))


def _inputs(config, batch=2, seq=20, pad=0):
    inputs = SPEC.make_inputs(config, batch=batch, seq=seq, seed=0)
    inputs["attention_mask"][0, :pad] = 0  # left-pad the first sample
    inputs["labels"][0, :pad] = -100
    return inputs


def _op_case(kernel, cutoff, with_mass, padding, q_start, B=2, H=3, Q=13, C=4, D=5):
    """Leaf tensors (all require grad) and the positional arguments of the gravity ops built from them."""
    g = torch.Generator().manual_seed(0)
    coords_k = torch.randn(B, H, q_start + Q, C, generator=g) * 0.8
    leaves = {"coords_q": coords_k[:, :, q_start:].clone(), "coords_k": coords_k}  # queries = last Q positions
    leaves["values"] = torch.randn(B, H, q_start + Q, D, generator=g)
    leaves["gamma_raw"] = torch.randn(H, generator=g) * 0.3
    leaves["radius_raw"] = torch.tensor(1.9)  # r = softplus(1.9) ~ 2.04: r^2 ~ 4.2 vs a mean d^2 ~ 5
    if with_mass:
        leaves["masses"] = F.softplus(torch.randn(B, q_start + Q, generator=g))
        leaves["beta"] = torch.randn(H, generator=g) * 0.3
    if kernel == "attractive":
        leaves["self_score"] = torch.randn(H, generator=g)
    leaves = {k: v.requires_grad_() for k, v in leaves.items()}
    key_valid = torch.ones(B, q_start + Q, dtype=torch.bool)
    key_valid[0, :4] = key_valid[1, q_start + 6] = not padding
    m = leaves.get("masses")
    args = (
        leaves["coords_q"], leaves["coords_k"], None if m is None else m[:, q_start:], m, leaves["values"],
        F.softplus(leaves["gamma_raw"]), leaves.get("beta"), None if cutoff == "none" else F.softplus(leaves["radius_raw"]),
        leaves.get("self_score"), key_valid if padding else None, q_start,
    )  # fmt: skip
    return leaves, args


@pytest.mark.parametrize("recompute", [True, False])
@pytest.mark.parametrize("q_start", [0, 3])
@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("with_mass", [True, False], ids=["mass_in_score", "mass_in_value"])
@pytest.mark.parametrize("cutoff", ["hard", "soft", "none"])
@pytest.mark.parametrize("kernel", ["repulsive", "attractive"])
def test_chunked_matches_naive_outputs_and_gradients(kernel, cutoff, with_mass, padding, q_start, recompute):
    leaves, args = _op_case(kernel, cutoff, with_mass, padding, q_start)
    with torch.no_grad():  # meaningful only if some attended pairs lie inside the radius and some outside
        d2 = (leaves["coords_q"][:, :, :, None] - leaves["coords_k"][:, :, None]).pow(2).sum(-1)
        off_diag, r2 = torch.ones_like(d2, dtype=torch.bool).tril(q_start - 1), F.softplus(leaves["radius_raw"]) ** 2
        assert (d2[off_diag] > r2).any() and (d2[off_diag] < r2).any()
    kw, weight = {"kernel": kernel, "eps": 0.5, "cutoff": cutoff, "sharpness": 10.0}, torch.randn(2, 3, 13, 5)
    results, fast_kw = [], {"chunk_size": 4, "recompute": recompute}  # 13 queries: blocks of 4, 4, 4, 1
    for fn, extra in ((ops.naive_gravity_attention, {}), (ops.chunked_gravity_attention, fast_kw)):
        out = fn(*args, **kw, **extra)
        grads = torch.autograd.grad((out * weight).sum(), list(leaves.values()), allow_unused=True, retain_graph=True)
        results.append((out, dict(zip(leaves, grads, strict=True))))
    (ref, ref_grads), (fast, fast_grads) = results
    assert fast.shape == (2, 3, 13, 5)
    torch.testing.assert_close(fast, ref, **TOL)
    with torch.no_grad():  # inference runs the same blocks outside the autograd function
        torch.testing.assert_close(ops.chunked_gravity_attention(*args, **kw, **fast_kw), fast, rtol=0, atol=0)
    for name, ref_grad in ref_grads.items():
        if name == "radius_raw" and cutoff == "none":
            assert ref_grad is None and fast_grads[name] is None
            continue
        assert ref_grad is not None and ref_grad.abs().sum() > 0, name
        torch.testing.assert_close(fast_grads[name], ref_grad, **TOL, msg=lambda m, n=name: f"grad of {n}: {m}")
    if cutoff != "none":  # the radius learns in both modes (the original's boolean mask gave it no gradient)
        assert torch.isfinite(fast_grads["radius_raw"]) and fast_grads["radius_raw"] != 0


EQUIVALENCE_CONFIGS = {
    "default": {},
    "soft_mass_in_value": {"radius_cutoff": "soft", "mass_in_value": True},
    "attractive_self": {"gravity_kernel": "attractive", "self_attention": True, "gravity_epsilon": 1.0},
}


@pytest.mark.parametrize("overrides", EQUIVALENCE_CONFIGS.values(), ids=EQUIVALENCE_CONFIGS.keys())
def test_model_chunked_matches_naive(overrides):
    fast = _model(**overrides, gravity_implementation="chunked").train()
    ref = NgtForCausalLM(_config(**overrides, gravity_implementation="naive")).train()
    ref.load_state_dict(fast.state_dict())
    inputs, losses = _inputs(fast.config, pad=3), []
    for model in (fast, ref):
        torch.manual_seed(1)  # the repulsion term samples positions
        losses.append(model(**inputs).loss)
        losses[-1].backward()
    torch.testing.assert_close(losses[0], losses[1], **TOL)
    ref_params = dict(ref.named_parameters())
    for name, param in fast.named_parameters():
        torch.testing.assert_close(param.grad, ref_params[name].grad, rtol=1e-4, atol=1e-6, msg=name)


BF16_CASES = {  # (kernel, cutoff, masses in the score)
    "repulsive_hard_mass": ("repulsive", "hard", True),
    "attractive_soft_self": ("attractive", "soft", False),
    "repulsive_none_mass": ("repulsive", "none", True),
}


def _close_in_bf16(actual, expected, name):
    """bf16 rounds P before P V (0.4% per probability): compare against the reference's own scale."""
    scale = expected.detach().abs().max().item()
    torch.testing.assert_close(
        actual.float(), expected.float(), rtol=0.05, atol=0.03 * scale, msg=lambda m: f"{name}: {m}"
    )


@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("case", BF16_CASES.values(), ids=BF16_CASES.keys())
def test_chunked_matches_naive_under_bf16_autocast(case, padding):
    """Under autocast the values are bf16 (they come out of a Linear) and P V runs in bf16 in both paths; the scores,
    the softmax and every gradient through them stay float32. Blocks of 4 over 13 queries."""
    kernel, cutoff, with_mass = case
    leaves, args = _op_case(kernel, cutoff, with_mass, padding, 3)
    args = (*args[:4], leaves["values"].to(torch.bfloat16), *args[5:])
    kw, weight = {"kernel": kernel, "eps": 0.5, "cutoff": cutoff, "sharpness": 10.0}, torch.randn(2, 3, 13, 5)
    results = []
    for fn, extra in ((ops.naive_gravity_attention, {}), (ops.chunked_gravity_attention, {"chunk_size": 4})):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(*args, **kw, **extra)
        grads = torch.autograd.grad((out * weight).sum(), list(leaves.values()), allow_unused=True, retain_graph=True)
        results.append((out, dict(zip(leaves, grads, strict=True))))
    (ref, ref_grads), (fast, fast_grads) = results
    assert fast.dtype == ref.dtype == torch.bfloat16
    _close_in_bf16(fast, ref, "output")
    for name, ref_grad in ref_grads.items():
        if ref_grad is None:
            assert name == "radius_raw" and cutoff == "none" and fast_grads[name] is None
            continue
        assert fast_grads[name].dtype == ref_grad.dtype and ref_grad.abs().sum() > 0, name
        _close_in_bf16(fast_grads[name], ref_grad, f"grad of {name}")


@pytest.mark.parametrize("overrides", EQUIVALENCE_CONFIGS.values(), ids=EQUIVALENCE_CONFIGS.keys())
def test_model_chunked_matches_naive_under_bf16_autocast(overrides):
    fast = _model(**overrides, gravity_implementation="chunked").train()
    ref = NgtForCausalLM(_config(**overrides, gravity_implementation="naive")).train()
    ref.load_state_dict(fast.state_dict())
    inputs, losses = _inputs(fast.config, pad=3), []  # 20 tokens: blocks of 8, 8, 4
    for model in (fast, ref):
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses.append(model(**inputs).loss)
        losses[-1].backward()
    torch.testing.assert_close(losses[0], losses[1], rtol=0.01, atol=0.01)
    ref_grads = {name: param.grad for name, param in ref.named_parameters()}
    # Per parameter, relative to its own gradient, with a floor far below the model's gradient scale: coord_proj's
    # bias shifts every coordinate of a head alike and leaves the distances unchanged, so its true gradient is 0
    # and both paths return rounding noise there (~1e-5).
    floor = 1e-4 * max(grad.abs().max().item() for grad in ref_grads.values())
    for name, param in fast.named_parameters():
        error, size = (param.grad - ref_grads[name]).norm().item(), ref_grads[name].norm().item()
        assert error <= 0.05 * size + floor, f"{name}: |fast - naive| = {error:.3g}, |naive| = {size:.3g}"


def test_cpu_blocks_shrink_to_the_cache_budget(monkeypatch):
    cpu = torch.device("cpu")
    assert ops._block_rows(128, 16, 1024, cpu) == 64  # batch 2 x 8 heads at 1024 tokens
    assert ops._block_rows(128, 64, 256, cpu) == 64  # batch 8 x 8 heads at 256 tokens
    assert ops._block_rows(32, 16, 1024, cpu) == 32  # never more than chunk_size
    assert ops._block_rows(128, 64, 1 << 16, cpu) == ops._MIN_BLOCK_ROWS
    assert ops._block_rows(128, 16, 1024, torch.device("meta")) == 128  # accelerators keep chunk_size
    # The budget only changes the partition: blocks of 3 rows (13 queries, 16 keys, 2 x 3 heads) match the reference.
    monkeypatch.setattr(ops, "_CPU_BLOCK_ELEMENTS", 6 * 16 * 3)
    monkeypatch.setattr(ops, "_MIN_BLOCK_ROWS", 1)
    seen, blocks = [], ops._blocks
    monkeypatch.setattr(ops, "_blocks", lambda *a: seen.append(blocks(*a)) or seen[-1])
    leaves, args = _op_case("repulsive", "hard", True, True, 3)
    kw, weight = {"kernel": "repulsive", "eps": 0.5, "cutoff": "hard", "sharpness": 10.0}, torch.randn(2, 3, 13, 5)
    results = []
    for fn, extra in ((ops.naive_gravity_attention, {}), (ops.chunked_gravity_attention, {"chunk_size": 128})):
        out = fn(*args, **kw, **extra)
        results.append((out, torch.autograd.grad((out * weight).sum(), list(leaves.values()), retain_graph=True)))
    assert [[rows.stop - rows.start for rows, _, _ in b] for b in seen] == [[3, 3, 3, 3, 1]] * 2  # forward, backward
    torch.testing.assert_close(results[1][0], results[0][0], **TOL)
    for name, fast_grad, ref_grad in zip(leaves, results[1][1], results[0][1], strict=True):
        torch.testing.assert_close(fast_grad, ref_grad, **TOL, msg=lambda m, n=name: f"grad of {n}: {m}")


@pytest.mark.parametrize("cutoff", ["hard", "soft"])
def test_radius_gets_gradient_in_model(cutoff):
    model = _model(radius_cutoff=cutoff, initial_radius=0.5).train()
    inputs = _inputs(model.config)
    stats = model.gravity_diagnostics(inputs["input_ids"])
    assert max(stats[f"layer_{i}/sparsity"] for i in range(model.config.num_hidden_layers)) > 0
    model(**inputs).loss.backward()
    grads = [layer.attn.radius_raw.grad for layer in model.model.layers]
    assert all(g is not None and torch.isfinite(g) and g != 0 for g in grads)


def _scores(cutoff, radius_requires_grad=False, kernel="repulsive", eps=0.5, self_score=None, key_valid=None):
    """Naive scores of random particles (B=2, H=3, 12 positions), d^2, the attended off-diagonal pairs and r^2."""
    g = torch.Generator().manual_seed(0)
    coords, masses = torch.randn(2, 3, 12, 4, generator=g) * 0.8, F.softplus(torch.randn(2, 12, generator=g))
    gamma, beta = F.softplus(torch.randn(3, generator=g)), torch.randn(3, generator=g) * 0.3
    radius = torch.tensor(2.0, requires_grad=radius_requires_grad)
    scores = ops.naive_gravity_scores(
        coords, coords, masses, masses, gamma, beta, radius, self_score, key_valid, 0,
        kernel=kernel, eps=eps, cutoff=cutoff, sharpness=10.0,
    )  # fmt: skip
    d2 = (coords[:, :, :, None] - coords[:, :, None]).pow(2).sum(-1)
    return scores.detach(), d2, torch.ones(12, 12, dtype=torch.bool).tril(-1).expand_as(d2), 4.0


def test_hard_cutoff_masks_and_soft_cutoff_suppresses():
    for radius_requires_grad in (False, True):  # plain mask, and the straight-through forward value
        scores, d2, attended, r2 = _scores("hard", radius_requires_grad)
        outside, inside = attended & (d2 > r2), attended & (d2 < r2)
        assert outside.any() and inside.any() and (scores[inside] > -100).all()
        assert ((scores[outside] / ops.HARD_CUTOFF_SCORE - 1).abs() < 1e-6).all()
        assert (scores.softmax(-1)[outside] < 1e-6).all()
    (soft, d2, attended, r2), none = _scores("soft"), _scores("none")[0]
    outside, well_inside = attended & (d2 > r2), attended & (d2 < 0.25 * r2)
    assert well_inside.any() and (none[outside] < 0).any()
    assert (soft[outside] < none[outside]).all()  # a multiplicative gate would raise the negative ones toward 0
    assert ((soft - none)[outside] <= -math.log(2) + 1e-5).all()  # -softplus(k (d^2/r^2 - 1)) <= -log 2 outside
    assert ((soft - none)[well_inside].abs() < 1e-3).all()


def test_repulsive_kernel_never_attends_to_itself():
    key_valid = torch.ones(2, 12, dtype=torch.bool)
    key_valid[1, :4] = False  # sample 1, queries 0..4: their own position is the only valid key
    diag = _scores("none", eps=1e-6, key_valid=key_valid)[0].softmax(-1).diagonal(dim1=-2, dim2=-1)  # (B, H, Q)
    assert (diag[0, :, 1:] < 1e-6).all() and (diag[1, :, 5:] < 1e-6).all()
    assert torch.equal(diag[0, :, 0], torch.ones(3)) and torch.equal(diag[1, :, :5], torch.ones(3, 5))


@pytest.mark.parametrize("kernel", ["repulsive", "attractive"])
def test_kernel_preference_and_self_score(kernel):
    # key 0 far (distance 2), key 1 near (distance 0.5), query 2 at the origin; equal masses, no cutoff
    coords, ones = torch.tensor([[2.0, 0.0], [0.0, 0.5], [0.0, 0.0]])[None, None], torch.ones(1, 3)
    scores = ops.naive_gravity_scores(
        coords, coords, ones, ones, torch.tensor([1.0]), torch.tensor([0.0]), None,
        torch.tensor([-5.0]) if kernel == "attractive" else None, None, 0,
        kernel=kernel, eps=1e-3, cutoff="none", sharpness=10.0,
    )  # fmt: skip
    far, near = scores.softmax(-1)[0, 0, 2, :2]
    assert (far > near) if kernel == "repulsive" else (near > far)
    self_score = torch.tensor([0.7, -1.3, 2.5])  # with a learned self score the diagonal is exactly that value
    diag = _scores("soft", kernel=kernel, self_score=self_score)[0].diagonal(dim1=-2, dim2=-1)
    assert torch.equal(diag, self_score.view(1, 3, 1).expand_as(diag))


def test_mass_in_value_scales_values_and_has_no_beta():
    assert _model(mass_in_value=False).model.layers[0].attn.beta is not None
    torch.manual_seed(0)
    attn = NgtGravityAttention(16, 6, 2, 3, mass_in_value=True, radius_cutoff="soft", implementation="naive").eval()
    assert attn.beta is None and "beta" not in dict(attn.named_parameters())
    hidden, coords, masses = torch.randn(2, 7, 16), torch.randn(2, 7, 6), F.softplus(torch.randn(2, 7))
    with torch.no_grad():
        out = attn(hidden, coords, masses)
        coords_h = attn.coord_proj(coords).view(2, 7, 2, 3).transpose(1, 2)
        values = (attn.v_proj(hidden) * masses[..., None]).view(2, 7, 2, 8).transpose(1, 2)  # v_j <- m_j v_j
        expected = ops.naive_gravity_attention(
            coords_h, coords_h, None, None, values, attn.gamma, None, attn.radius, None, None, 0,
            kernel="repulsive", eps=attn.eps, cutoff="soft", sharpness=attn.sharpness,
        )  # fmt: skip
        torch.testing.assert_close(out, attn.o_proj(expected.transpose(1, 2).reshape(2, 7, 16)), **TOL)
        assert not torch.allclose(attn(hidden, coords, masses * 2), out)


def test_repulsion_regulariser_in_the_model():
    model = _model().train()
    inputs, last = _inputs(model.config), f"model.layers.{model.config.num_hidden_layers - 1}.coord_update"
    out = model(**inputs)
    assert out.repulsion_loss is not None and out.repulsion_loss > 0
    torch.testing.assert_close(out.loss, out.lm_loss + model.config.repulsion_weight * out.repulsion_loss)
    with torch.no_grad():
        out = model.eval()(**inputs)
    assert out.repulsion_loss is None and torch.equal(out.loss, out.lm_loss)
    assert any(n.startswith(last) for n, _ in model.named_parameters())  # the regulariser reads the last coordinates
    model = _model(repulsion_interval=3).train()  # computed on training forwards 1 and 4 only
    outs = [model(**inputs) for _ in range(5)]
    assert [o.repulsion_loss is not None for o in outs] == [True, False, False, True, False]
    assert all(torch.equal(o.loss, o.lm_loss) for o in outs[1:3])
    model = _model(repulsion_weight=0.0).train()  # the last coordinate update would be dead: it is not built
    assert not any(n.startswith(last) for n, _ in model.named_parameters())
    (out := model(**inputs)).loss.backward()
    assert out.repulsion_loss is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_repulsion_energy_by_hand():
    points, masses, pairs = [(0.0, 0.0), (3.0, 4.0), (0.1, 0.0)], [1.0, 2.0, 0.5], ((0, 1), (0, 2), (1, 2))
    # E = mean_{i<j} m_i m_j / max(d_ij, min_dist)^2; the pair (0, 2) is closer than min_dist = 0.5
    expected = sum(masses[i] * masses[j] / max(math.dist(points[i], points[j]), 0.5) ** 2 for i, j in pairs) / 3
    # a heavy padding particle (index 1) right next to particle 0: counting it would dominate the mean
    coords = torch.tensor([points[0], (0.01, 0.0), points[1], points[2]])[None]
    mass_t, valid = torch.tensor([[masses[0], 100.0, masses[1], masses[2]]]), torch.tensor([[True, False, True, True]])
    energy = ops.repulsion_energy(coords, mass_t, valid, num_samples=0, min_dist=0.5)
    torch.testing.assert_close(energy, torch.tensor(expected))
    assert ops.repulsion_energy(coords, mass_t, None, num_samples=0, min_dist=0.5) > 2 * expected


def test_gravity_diagnostics():
    model = _model().eval()
    stats = model.gravity_diagnostics(_inputs(model.config, seq=16)["input_ids"])
    names, layers = ("gamma", "radius", "mean_distance", "entropy", "sparsity"), range(model.config.num_hidden_layers)
    assert set(stats) == {f"layer_{i}/{n}" for i in layers for n in names} | {f"mean/{n}" for n in names}
    assert all(isinstance(v, float) for v in stats.values())
    for i in layers:
        assert stats[f"layer_{i}/gamma"] == pytest.approx(math.log(2))  # softplus(0)
        assert stats[f"layer_{i}/radius"] == pytest.approx(F.softplus(torch.tensor(4.0)).item())
        assert 0 < stats[f"layer_{i}/entropy"] < math.log(16)
        assert 0 <= stats[f"layer_{i}/sparsity"] <= 1 and stats[f"layer_{i}/mean_distance"] > 0
    for n in names:
        assert stats[f"mean/{n}"] == pytest.approx(sum(stats[f"layer_{i}/{n}"] for i in layers) / len(layers))


def test_bf16_autocast_training_step():
    model = _model().train()
    inputs = _inputs(model.config, pad=2)
    with torch.no_grad():
        reference = model(**inputs).logits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**inputs)
    out.loss.backward()
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    torch.testing.assert_close(out.logits.float(), reference, rtol=0.05, atol=0.02 * reference.abs().max().item())


def test_cache_grows_by_one_position_per_decoded_token():
    model, n, k = _model().eval(), 5, 4
    ids = _inputs(model.config, seq=n + k)["input_ids"]
    with torch.no_grad():
        cache = model(ids[:, :n], use_cache=True).past_key_values
        assert cache.get_seq_length() == n
        for step in range(k):
            cache = model(ids[:, n + step : n + step + 1], cache=cache, use_cache=True).past_key_values
            assert cache.get_seq_length() == n + step + 1
    for layer in cache.layers:
        assert layer.keys.shape == (2, model.config.num_attention_heads, n + k, model.config.head_coord_dim + 1)


DROPOUT_KW = dict(kernel="repulsive", eps=0.5, cutoff="hard", sharpness=10.0, dropout_p=0.5, training=True)


@pytest.mark.parametrize("recompute", [True, False])
def test_dropout_backward_uses_the_forward_mask(recompute):
    leaves, args = _op_case("repulsive", "hard", True, True, 0)
    out = ops.chunked_gravity_attention(*args, **DROPOUT_KW, chunk_size=4, recompute=recompute)
    weight = torch.randn(out.shape)
    (grad_v,) = torch.autograd.grad((out * weight).sum(), leaves["values"])
    # out = dropout(P) V is linear in V: <dL/dV, V> = L exactly when the backward applies the forward's mask
    torch.testing.assert_close((grad_v * leaves["values"]).sum(), (out * weight).sum(), **TOL)
    with torch.no_grad():
        assert not torch.allclose(out, ops.chunked_gravity_attention(*args, **{**DROPOUT_KW, "training": False}))


@pytest.mark.parametrize("recompute", [True, False])
def test_dropout_draws_a_fresh_mask_on_every_call(recompute):
    args = _op_case("repulsive", "hard", True, False, 0)[1]
    with torch.no_grad():
        first, second = (ops.chunked_gravity_attention(*args, **DROPOUT_KW, recompute=recompute) for _ in "ab")
    assert not torch.equal(first, second)


def test_attractive_kernel_requires_self_attention():
    with pytest.raises(ValueError, match="self_attention"):
        _config(gravity_kernel="attractive", self_attention=False)
