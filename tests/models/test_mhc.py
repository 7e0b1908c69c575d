"""mHC architecture tests: the paper's invariants, fast == reference, rate 1 == plain pre-norm transformer, parity
with transformers' own DeepSeek-V4 hyper-connection, masking, causality."""

import math

import pytest
import torch
from model_specs import CONFIGS
from torch.nn import functional as F

from hf_models import MhcConfig, MhcForCausalLM, MhcForImageClassification, MhcModel
from hf_models.mhc import ops_mhc
from hf_models.mhc.modeling_mhc import MhcHyperConnection


def _config(name="tiny.json", **overrides):
    config = MhcConfig.from_pretrained(str(CONFIGS / "mhc" / name))
    for key, value in overrides.items():
        setattr(config, key, value)
    return MhcConfig(**config.to_dict())


def _perturb(model, scale=1.0, seed=0):
    """Move the hyper-connection parameters away from their init so the dynamic parts matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, MhcHyperConnection) and module.n > 1:
                module.bias.add_(scale * torch.randn(module.bias.shape, generator=generator))
                if module.gate is not None:
                    module.gate.fill_(scale)
    return model


def test_sinkhorn_rows_and_columns_sum_to_one():
    logits = torch.randn(500, 4, 4)
    m = ops_mhc.sinkhorn_knopp(logits, 20)
    assert (m > 0).all()
    torch.testing.assert_close(m.sum(-1), torch.ones(500, 4), rtol=0, atol=1e-6)  # rows: normalised last
    torch.testing.assert_close(m.sum(-2), torch.ones(500, 4), rtol=0, atol=1e-3)
    # peaked matrices converge more slowly: t_max = 20 leaves a few percent on the columns, more iterations less
    peaked = 3 * torch.randn(500, 4, 4)
    errors = [float((ops_mhc.sinkhorn_knopp(peaked, t).sum(-2) - 1).abs().max()) for t in (5, 20, 200)]
    assert errors[0] > errors[1] > errors[2] and errors[1] < 0.1 and errors[2] < 5e-3, errors
    big = ops_mhc.sinkhorn_knopp(torch.full((2, 4, 4), 500.0) + torch.eye(4), 20)  # no overflow
    assert torch.isfinite(big).all()


def test_model_residual_matrices_are_doubly_stochastic():
    model = _perturb(MhcForCausalLM(_config()).eval(), scale=0.5)
    ids = torch.randint(1, 64, (2, 9))
    matrices = model.model.residual_matrices(input_ids=ids)
    assert len(matrices) == 2 * model.config.num_hidden_layers
    for matrix in matrices:
        assert matrix.shape == (2, 9, 4, 4) and (matrix > 0).all()
        torch.testing.assert_close(matrix.sum(-1), torch.ones(2, 9, 4), rtol=0, atol=1e-5)
        # columns after t_max = 20 iterations of a diagonal-heavy matrix (see test_sinkhorn_rows_and_columns...)
        torch.testing.assert_close(matrix.sum(-2), torch.ones(2, 9, 4), rtol=0, atol=2e-2)


def _grads(fn, *tensors):
    tensors = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*tensors)
    outs = out if isinstance(out, tuple) else (out,)
    weights = [torch.randn(o.shape, generator=torch.Generator().manual_seed(i)) for i, o in enumerate(outs)]
    sum((o * w).sum() for o, w in zip(outs, weights, strict=True)).backward()
    return outs, [t.grad for t in tensors]


def test_fast_paths_equal_the_references_with_gradients():
    torch.manual_seed(0)
    n, width = 3, 5
    streams, output = torch.randn(2, 7, n, width), torch.randn(2, 7, width)
    logits = 2 * torch.randn(2, 7, n, n)
    for fast, naive, args in [
        (ops_mhc.sinkhorn_knopp, ops_mhc.naive_sinkhorn_knopp, (logits,)),
        (ops_mhc.collapse, ops_mhc.naive_collapse, (streams, torch.rand(2, 7, n))),
        (ops_mhc.expand, ops_mhc.naive_expand, (streams, torch.rand(2, 7, n, n), torch.rand(2, 7, n), output)),
    ]:
        extra = (20,) if fast is ops_mhc.sinkhorn_knopp else ()
        fast_out, fast_grads = _grads(lambda *t, f=fast, e=extra: f(*t, *e), *args)
        naive_out, naive_grads = _grads(lambda *t, f=naive, e=extra: f(*t, *e), *args)
        for a, b in zip(fast_out + tuple(fast_grads), naive_out + tuple(naive_grads), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    phi, bias, gate = 0.3 * torch.randn(2 * n + n * n, n * width), torch.randn(2 * n + n * n), torch.rand(3)
    for dynamic in (True, False):

        def fused(s, p, b, g, d=dynamic):
            return ops_mhc.mhc_coefficients(s, p, b, g, 20, 1e-6, d)

        def reference(s, p, b, g, d=dynamic):
            return ops_mhc.naive_mhc_coefficients(s, p, b, g, 20, 1e-6, d)

        fast_out, fast_grads = _grads(fused, streams, phi, bias, gate)
        naive_out, naive_grads = _grads(reference, streams, phi, bias, gate)
        for a, b in zip(fast_out, naive_out, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        for a, b in zip(fast_grads, naive_grads, strict=True):
            if b is None:  # not dynamic: streams, phi and gate do not enter
                assert a is None or not a.any()
            else:
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_compile_ready_forms_equal_the_eager_paths_with_gradients():
    """`mhc_read` / `mhc_write` (plain ops for `torch.compile`) == coefficients + collapse / expand, uncompiled."""
    torch.manual_seed(0)
    n, width = 3, 5
    streams, output = torch.randn(2, 7, n, width), torch.randn(2, 7, width)
    phi, bias, gate = 0.3 * torch.randn(2 * n + n * n, n * width), torch.randn(2 * n + n * n), torch.rand(3)

    def eager_read(s, p, b, g):
        pre, post, res = ops_mhc.mhc_coefficients(s, p, b, g, 20, 1e-6)
        return ops_mhc.collapse(s, pre), post, res

    pairs = [
        (lambda s, p, b, g: ops_mhc.mhc_read(s, p, b, g, 20, 1e-6), eager_read, (streams, phi, bias, gate)),
        (ops_mhc.mhc_write, ops_mhc.expand, (streams, torch.rand(2, 7, n, n), torch.rand(2, 7, n), output)),
    ]
    for plain, eager, args in pairs:
        plain_out, plain_grads = _grads(plain, *args)
        eager_out, eager_grads = _grads(eager, *args)
        for a, b in zip(plain_out + tuple(plain_grads), eager_out + tuple(eager_grads), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_coefficients_stay_float32_under_autocast():
    """The coefficient projections run in float32 inside a bfloat16 autocast region (autocast would otherwise run
    the `x phi^T` matmuls in bfloat16: about 2e-3 off in the coefficients here)."""
    torch.manual_seed(0)
    n, width = 4, 64
    streams = torch.randn(3, 5, n, width)
    phi, bias, gate = torch.randn(2 * n + n * n, n * width), torch.randn(2 * n + n * n), torch.rand(3)
    hc_phi = torch.randn(2 + n, width)
    plain = ops_mhc.mhc_coefficients(streams, phi, bias, gate, 20, 1e-6)
    plain_hc = ops_mhc.hc_coefficients(streams, hc_phi, bias, gate, 1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (streams.flatten(-2) @ phi.T).dtype == torch.bfloat16  # what autocast does to a bare projection
        mixed = ops_mhc.mhc_coefficients(streams, phi, bias, gate, 20, 1e-6)
        mixed_hc = ops_mhc.hc_coefficients(streams, hc_phi, bias, gate, 1e-6)
    for a, b in zip(mixed + mixed_hc, plain + plain_hc, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_compiled_hyper_connections_train_like_the_eager_model():
    """`hyper_connection_implementation="compile"`: the same loss and gradients as the eager model (torch.compile, training
    only), and evaluation stays eager."""
    torch.manual_seed(0)
    eager = _perturb(MhcForCausalLM(_config(hyper_connection_implementation="eager"))).train()
    fused = MhcForCausalLM(_config(hyper_connection_implementation="compile")).train()
    fused.load_state_dict(eager.state_dict())
    ids = torch.randint(1, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    losses = []
    for model in (eager, fused):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    for (name, a), (_, b) in zip(eager.named_parameters(), fused.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert ops_mhc.mhc_read in ops_mhc._COMPILED and ops_mhc.mhc_write in ops_mhc._COMPILED
    compiled_count = len(ops_mhc._COMPILED)
    fused.eval()
    with torch.no_grad():
        torch.testing.assert_close(fused(input_ids=ids).logits, eager.eval()(input_ids=ids).logits)
    assert len(ops_mhc._COMPILED) == compiled_count


def test_initial_coefficients_follow_the_documented_biases():
    n = 4
    module = MhcHyperConnection(8, n, index=0, kind="mhc", residual_diagonal_init=4.0)
    with torch.no_grad():
        pre, post, res = module.coefficients(torch.zeros(1, 1, n, 8))  # zero streams: only the static part
    torch.testing.assert_close(pre, torch.full((1, 1, n), 1 / n))
    torch.testing.assert_close(post, torch.ones(1, 1, n))
    diagonal = math.exp(4) / (math.exp(4) + n - 1)
    assert abs(float(res[0, 0, 0, 0]) - diagonal) < 1e-5 and abs(diagonal - 0.948) < 1e-3
    hc = MhcHyperConnection(8, n, index=5, kind="hc")
    pre, post, res = hc.coefficients(torch.zeros(1, 1, n, 8))
    assert torch.equal(pre[0, 0], F.one_hot(torch.tensor(5 % n), n).float())
    torch.testing.assert_close(res[0, 0], torch.eye(n))


def test_rate_one_is_exactly_a_plain_pre_norm_transformer():
    model = MhcForCausalLM(_config(expansion_rate=1)).eval()
    assert not [name for name, _ in model.named_parameters() if "_hc." in name]  # no coefficients at all
    ids = torch.randint(1, 64, (2, 11))
    with torch.no_grad():
        expected = model(ids, use_cache=False).logits
        inner = model.model
        positions = torch.arange(11)[None].expand(2, -1)
        h = inner.embed_tokens(ids) + ops_mhc.sinusoidal_code(positions, model.config.hidden_size)
        for block in inner.layers:
            h = h + block.attn(block.attn_norm(h), is_causal=True)
            h = h + block.mlp(block.mlp_norm(h))
        plain = model.lm_head(inner.norm(h))
    torch.testing.assert_close(expected, plain, rtol=0, atol=1e-6)


def test_parity_with_transformers_deepseek_v4_hyper_connection():
    """transformers' DeepSeek-V4 mHC module defines the same coefficients with the mixing matrix transposed
    (x' = comb^T x + post * F) and Sinkhorn starting from a row softmax; with its eps at 0 the two agree."""
    from transformers.models.deepseek_v4.configuration_deepseek_v4 import DeepseekV4Config
    from transformers.models.deepseek_v4.modeling_deepseek_v4 import DeepseekV4HyperConnection

    n, width = 4, 16
    theirs = DeepseekV4HyperConnection(
        DeepseekV4Config(hidden_size=width, hc_mult=n, hc_sinkhorn_iters=20, hc_eps=0.0, rms_norm_eps=1e-6)
    )
    ours = MhcHyperConnection(width, n, index=0, kind="mhc", sinkhorn_iterations=20, eps=1e-6)
    torch.manual_seed(0)
    with torch.no_grad():
        theirs.fn.normal_(0, 0.05)
        theirs.base.normal_(0, 1.0)
        theirs.scale.copy_(torch.tensor([0.7, 1.3, 0.9]))
        # ours: res[i, j] = their comb[j, i]
        order = list(range(2 * n)) + [2 * n + j * n + i for i in range(n) for j in range(n)]
        ours.phi.copy_(theirs.fn[order])
        ours.bias.copy_(theirs.base[order])
        ours.gate.copy_(theirs.scale)
    streams = torch.randn(2, 5, n, width)
    post_theirs, comb, collapsed = theirs(streams)
    pre, post, res = ours.coefficients(streams)
    torch.testing.assert_close(post, post_theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res, comb.transpose(-1, -2), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ops_mhc.collapse(streams, pre), collapsed, rtol=1e-5, atol=1e-6)


def _train_steps(model, steps, lr, seed=0):
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        ids = torch.randint(1, 64, (4, 16), generator=generator)
        model(ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def test_composite_gain_stays_bounded_for_mhc_and_grows_for_hc():
    """The product of H_res over all 2L hyper-connections: mHC keeps its gain at 1 (doubly stochastic) at init and
    after training; plain HC's unconstrained H_res = I + alpha tanh(.) compounds over depth."""
    ids = torch.randint(1, 64, (2, 16))
    kwargs = dict(num_hidden_layers=6, hyper_connection_gate_init=0.3)
    torch.manual_seed(0)
    mhc = MhcForCausalLM(_config(**kwargs))
    torch.manual_seed(0)
    hc = MhcForCausalLM(_config(hyper_connection_type="hc", **kwargs))
    assert mhc.model.composite_gain(ids) <= 1.6
    initial_hc = hc.model.composite_gain(ids)
    _train_steps(mhc, 30, lr=0.5)
    _train_steps(hc, 30, lr=0.5)
    assert mhc.model.composite_gain(ids) <= 1.6
    trained_hc = hc.model.composite_gain(ids)
    assert trained_hc > 1.6 and trained_hc > initial_hc, (initial_hc, trained_hc)


def test_static_only_hyper_connections_have_no_dynamic_parameters():
    model = MhcForCausalLM(_config(dynamic_hyper_connections=False))
    names = [name for name, _ in model.named_parameters() if "_hc." in name]
    assert names and all(name.endswith(".bias") for name in names)
    ids = torch.randint(1, 64, (2, 8))
    model(ids, labels=ids).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "_hc." in n)


def test_causality_is_the_configured_choice():
    ids = torch.randint(1, 64, (1, 10))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] % 63) + 1
    for is_causal in (True, False):
        torch.manual_seed(0)
        model = MhcModel(_config("tiny_encoder.json", is_causal=is_causal)).eval()
        with torch.no_grad():
            a = model(ids, use_cache=False).last_hidden_state
            b = model(changed, use_cache=False).last_hidden_state
        early_changed = not torch.allclose(a[:, :-1], b[:, :-1])
        assert early_changed == (not is_causal)
    with pytest.raises(ValueError, match="is_causal=True"):
        MhcForCausalLM(_config("tiny_encoder.json"))
    with pytest.raises(ValueError, match="use_cache"):
        MhcModel(_config("tiny_encoder.json"))(ids, use_cache=True)


def test_mask_ratio_keeps_the_configured_fraction_in_training_only():
    config = _config("tiny_image.json", mask_ratio=0.25)
    model = MhcForImageClassification(config)
    pixels = torch.randn(6, 1, 8, 8)
    keep = int(config.num_patches * (1 - config.mask_ratio))
    assert keep == 12
    model.train()
    kept = model.model(pixel_values=pixels).kept_patches
    assert kept.shape == (6, keep)
    assert all(len(set(row.tolist())) == keep for row in kept)  # distinct patches
    assert len({tuple(row.tolist()) for row in kept}) > 1  # a different subset per image
    model.eval()
    assert model.model(pixel_values=pixels).kept_patches.shape == (6, config.num_patches)
    for ratio, expected in ((0.0, 16), (0.5, 8), (0.9, 1)):
        model = MhcForImageClassification(_config("tiny_image.json", mask_ratio=ratio)).train()
        assert model.model(pixel_values=pixels).kept_patches.shape[1] == expected


def test_masked_average_pool_counts_only_kept_patches():
    tokens = torch.arange(1.0, 5.0).view(1, 4, 1)  # patches 0, 1, 4, 5 of a 4x4 grid -> the top-left 2x2 cell
    kept = torch.tensor([[0, 1, 4, 5]])
    pooled = ops_mhc.masked_average_pool(tokens, kept, grid=4, pool=2)
    assert pooled.shape == (1, 1, 2, 2)
    assert float(pooled[0, 0, 0, 0]) == 2.5 and float(pooled[0, 0, 1, 1]) == 0.0


def test_patch_projection_starts_on_the_scale_of_the_position_code():
    """Unit-gain patch projection: a unit-variance image gives patch tokens of about unit RMS, like the sinusoidal
    position code they are added to (an std-0.02 projection left them at a few percent of it)."""
    config = _config("mnist.json")
    embed = MhcForImageClassification(config).model.embed_patches
    fan_in = config.num_channels * config.patch_size**2
    assert abs(float(embed.proj.weight.std()) - fan_in**-0.5) < 0.1 * fan_in**-0.5
    assert float(embed.proj.bias.abs().max()) == 0.0
    pixels = torch.randn(
        8, config.num_channels, config.image_size, config.image_size, generator=torch.Generator().manual_seed(0)
    )
    content = embed.proj(pixels).flatten(2).transpose(1, 2)
    code = embed.position_code(pixels.device)
    ratio = float(content.pow(2).mean().sqrt() / code.pow(2).mean().sqrt())
    assert 0.7 < ratio < 1.5, ratio


@pytest.mark.parametrize("head", ["causal-lm", "encoder", "image"])
def test_attn_implementation_eager_equals_sdpa(head):
    """`attn_implementation` is honoured: "eager" (attention written out) gives the outputs and gradients of "sdpa",
    with a padding mask and through the cache; the config says which one ran."""
    import copy

    from transformers import AutoConfig

    tiny = {"causal-lm": "tiny.json", "encoder": "tiny_encoder.json", "image": "tiny_image.json"}[head]
    cls = {"causal-lm": MhcForCausalLM, "encoder": MhcModel, "image": MhcForImageClassification}[head]
    config = AutoConfig.from_pretrained(f"configs/models/mhc/{tiny}")
    models = {}
    for implementation in ("sdpa", "eager"):
        torch.manual_seed(0)
        models[implementation] = cls._from_config(copy.deepcopy(config), attn_implementation=implementation).eval()
        with torch.no_grad():  # sharp attention (the init's is nearly uniform), so a wrong score or mask shows
            for name, param in models[implementation].named_parameters():
                if "qkv_proj.weight" in name:
                    param.mul_(20)
    assert [model.config._attn_implementation for model in models.values()] == list(models)
    if head == "image":
        inputs = {"pixel_values": torch.randn(2, config.num_channels, config.image_size, config.image_size)}
    else:
        ids = torch.randint(1, config.vocab_size, (2, 9))
        inputs = {"input_ids": ids, "attention_mask": torch.tensor([[1] * 9, [0] * 3 + [1] * 6])}
    outputs = {}
    for implementation, model in models.items():
        out = model(**inputs)
        main = out.logits if head != "encoder" else out.last_hidden_state
        main.float().pow(2).mean().backward()
        outputs[implementation] = (main, [p.grad for p in model.parameters()])
    torch.testing.assert_close(outputs["eager"][0], outputs["sdpa"][0], rtol=1e-5, atol=1e-5)
    for eager_grad, sdpa_grad in zip(outputs["eager"][1], outputs["sdpa"][1], strict=True):
        torch.testing.assert_close(eager_grad, sdpa_grad, rtol=1e-4, atol=1e-6)
    if head == "causal-lm":
        prompt = inputs["input_ids"][:1, :5]
        greedy = {k: m.generate(prompt, max_new_tokens=6, do_sample=False) for k, m in models.items()}
        assert torch.equal(greedy["eager"], greedy["sdpa"])
