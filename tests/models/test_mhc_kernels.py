"""The fused CPU kernels of the mHC hyper-connection (`hf_models/mhc/kernels_mhc.py`): equal to the readable
references on outputs and every gradient, in float64 (to rounding) and float32; a model on them trains like the eager
model; `auto` falls back to eager when they cannot be built; evaluation never builds them."""

import logging
import os
import subprocess
import sys

import pytest
import torch
from model_specs import CONFIGS

from hf_models import MhcConfig, MhcForCausalLM, MhcForImageClassification
from hf_models.mhc import kernels_mhc, modeling_mhc, ops_mhc
from hf_models.mhc.modeling_mhc import MhcHyperConnection


@pytest.fixture(scope="module")
def kernels():
    module = kernels_mhc.load()
    assert module is not None, f"the fused mHC CPU kernels did not build: {kernels_mhc.load_error()}"
    return module


def _config(name, **overrides):
    config = MhcConfig.from_pretrained(str(CONFIGS / "mhc" / name)).to_dict()
    return MhcConfig(**{**config, **overrides})


NAMES = ("out", "streams", "phi", "bias", "gate", "weight")


def _hyper_connection_grads(
    n, width, dtype, fused, kernels=None, seed=0, tokens=(3, 7), reference="naive", compute=None, scale=1.0
):
    """A hyper-connection around a small nonlinear layer, differentiated through a non-trivial loss: the output x'
    and the gradients of the streams, phi, bias, gate and the layer weight. The reference is the readable `naive_*`
    path, or the eager fast path (itself tested against it) where the naive loops would be too slow. The inputs are
    drawn in float64 and rounded to `dtype`; `compute` (default `dtype`) is the dtype the function runs in, so that
    float32 inputs can also be run exactly in float64. `scale` multiplies the coefficient logits' bias."""
    generator = torch.Generator().manual_seed(seed)
    k = 2 * n + n * n

    def draw(*shape, factor=1.0):
        values = factor * torch.randn(*shape, generator=generator, dtype=torch.float64)
        return values.to(dtype).to(compute or dtype)

    streams = draw(*tokens, n, width).requires_grad_()
    phi = draw(k, n * width, factor=0.3).requires_grad_()
    bias = draw(k, factor=scale).requires_grad_()
    gate = torch.tensor([0.5, 0.7, 0.9], dtype=compute or dtype, requires_grad=True)
    weight = draw(width, width).requires_grad_()
    if fused:
        h, post, res, link = ops_mhc.fused_mhc_read(streams, phi, bias, gate, 20, 1e-6, kernels)
        out = ops_mhc.fused_mhc_write(streams, res, post, torch.tanh(h @ weight), kernels, link)
    elif reference == "naive":
        pre, post, res = ops_mhc.naive_mhc_coefficients(streams, phi, bias, gate, 20, 1e-6)
        out = ops_mhc.naive_expand(streams, res, post, torch.tanh(ops_mhc.naive_collapse(streams, pre) @ weight))
    else:
        pre, post, res = ops_mhc.mhc_coefficients(streams, phi, bias, gate, 20, 1e-6)
        out = ops_mhc.expand(streams, res, post, torch.tanh(ops_mhc.collapse(streams, pre) @ weight))
    probe = draw(*out.shape)
    loss = (out * probe).sum() + 0.1 * out.pow(2).sum()
    # H_post and H_res also used outside the update (their gradients from there are added to the update's)
    loss = loss + post.pow(2).sum() + (res * draw(*res.shape)).sum()
    return (out, *torch.autograd.grad(loss, (streams, phi, bias, gate, weight)))


@pytest.mark.parametrize("n,width", [(4, 16), (2, 8), (3, 5), (5, 6)])
def test_fused_kernels_equal_the_reference_in_float64(kernels, n, width):
    fused = _hyper_connection_grads(n, width, torch.float64, True, kernels)
    naive = _hyper_connection_grads(n, width, torch.float64, False)
    for name, a, b in zip(NAMES, fused, naive, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=name)


@pytest.fixture
def vectorised_sinkhorn(monkeypatch):
    """The naive reference with the vectorised Sinkhorn-Knopp (equal to the naive loops, tests/models/test_mhc.py),
    which keeps the reference fast at hundreds of tokens and exact in float64 (the eager path computes the
    coefficients in float32)."""
    monkeypatch.setattr(ops_mhc, "naive_sinkhorn_knopp", ops_mhc.sinkhorn_knopp)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n,width", [(2, 13), (3, 5), (4, 33), (5, 6)])
def test_fused_kernels_equal_the_reference_in_float64_over_many_blocks(
    kernels, vectorised_sinkhorn, n, width, threads
):
    """303 tokens: several blocks of tokens (16 with AVX-512, 8 with AVX2) and several chunks of read_backward, the
    last block partly filled; odd widths, where every vector loop has a scalar tail."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fused = _hyper_connection_grads(n, width, torch.float64, True, kernels, tokens=(3, 101))
    finally:
        torch.set_num_threads(before)
    naive = _hyper_connection_grads(n, width, torch.float64, False, tokens=(3, 101))
    for name, a, b in zip(NAMES, fused, naive, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=name)


def _error(result, exact):
    """The largest deviation from the float64 result, relative to the largest entry of that result."""
    exact = exact.detach()
    return float((result.detach().double() - exact).abs().max() / exact.abs().max())


@pytest.mark.parametrize(
    "n,width,tokens", [(4, 33, (3, 7)), (2, 8, (3, 7)), (5, 6, (3, 7)), (3, 24, (5, 41)), (4, 128, (2, 100))]
)
def test_fused_kernels_in_float32_are_as_accurate_as_the_reference(kernels, vectorised_sinkhorn, n, width, tokens):
    """float32 against the exact (float64) result for the same float32 inputs. The kernels sum in other orders than
    the reference and take exp from a polynomial, so they do not round like it: each output must be as close to the
    exact result as the reference's own float32 run (within twice its error) and within 1e-5 of its largest entry.
    (Elementwise against the float32 reference, gradients summed over many terms differ by more than float32's
    rounding allows either of them to differ from the exact result.)"""
    args = dict(tokens=tokens)
    fused = _hyper_connection_grads(n, width, torch.float32, True, kernels, **args)
    plain = _hyper_connection_grads(n, width, torch.float32, False, **args)
    exact = _hyper_connection_grads(n, width, torch.float32, False, compute=torch.float64, **args)
    for name, a, b, c in zip(NAMES, fused, plain, exact, strict=True):
        assert a.dtype == torch.float32, name
        error, reference_error = _error(a, c), _error(b, c)
        assert error <= max(2 * reference_error, 1e-6) and error <= 1e-5, (name, error, reference_error)


def test_fused_kernels_with_extreme_coefficient_logits(kernels):
    """Logits up to +-80 apart: H_res entries below exp(-87) of the largest (where the kernels' float32 exp flushes to
    zero; the reference's float32 exp gives denormals) and saturated sigmoids; the coefficients, the update and every
    gradient stay finite and match the exact result."""
    args = dict(tokens=(3, 7), scale=40.0)
    fused = _hyper_connection_grads(4, 16, torch.float32, True, kernels, **args)
    exact = _hyper_connection_grads(4, 16, torch.float32, False, compute=torch.float64, **args)
    for name, a, c in zip(NAMES, fused, exact, strict=True):
        assert torch.isfinite(a).all(), name
        assert _error(a, c) <= 1e-5, (name, _error(a, c))


def test_the_build_matches_torchs_cpu_capability():
    """The kernels are compiled for the vector width torch itself runs at (its CPU capability, which
    ATEN_CPU_CAPABILITY can lower), and the build's name says which."""
    name, flags = kernels_mhc.extension_name()
    capability = torch.backends.cpu.get_cpu_capability()
    assert f"_{capability.lower()}_" in name
    assert ("-mavx512f" in flags) == (capability == "AVX512")
    assert ("-mavx2" in flags) == (capability in ("AVX2", "AVX512"))


@pytest.mark.slow
@pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() != "AVX512", reason="the AVX-512 host's other build: needs an AVX-512 CPU"
)
def test_the_avx2_build_equals_the_reference_on_an_avx512_host():
    """The AVX2 build (8-float vectors, other register blocking) runs the reference checks too: in a process where
    ATEN_CPU_CAPABILITY=avx2 lowers torch's capability, as on an AVX2-only CPU (built once, then cached)."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
         "-k", "(reference or capability or extreme or threads or eager_models) and not avx2_build"],
        env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout.splitlines()[-1], done.stdout[-2000:]


def test_fused_read_alone_and_update_alone(kernels):
    """Only h carries gradient (the update's output unused), or only the update does (h unused): the shared backward
    still runs and matches the reference."""
    generator = torch.Generator().manual_seed(3)
    n, width = 3, 6
    streams = torch.randn(2, 5, n, width, generator=generator, dtype=torch.float64, requires_grad=True)
    phi = (0.3 * torch.randn(2 * n + n * n, n * width, generator=generator, dtype=torch.float64)).requires_grad_()
    bias = torch.randn(2 * n + n * n, generator=generator, dtype=torch.float64).requires_grad_()
    gate = torch.tensor([0.5, 0.7, 0.9], dtype=torch.float64, requires_grad=True)
    layer_output = torch.randn(2, 5, width, generator=generator, dtype=torch.float64)
    for use_h, use_update in ((True, False), (False, True)):
        grads = []
        for fused in (True, False):
            if fused:
                h, post, res, link = ops_mhc.fused_mhc_read(streams, phi, bias, gate, 20, 1e-6, kernels)
                out = ops_mhc.fused_mhc_write(streams, res, post, layer_output, kernels, link)
            else:
                pre, post, res = ops_mhc.naive_mhc_coefficients(streams, phi, bias, gate, 20, 1e-6)
                h, out = ops_mhc.naive_collapse(streams, pre), ops_mhc.naive_expand(streams, res, post, layer_output)
            loss = (h.pow(2).sum() if use_h else 0) + (out.sin().sum() if use_update else 0)
            grads.append(torch.autograd.grad(loss, (streams, phi, bias, gate)))
        for a, b in zip(*grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_fused_kernels_split_over_threads_and_chunks(kernels):
    """Enough tokens for several threads and several BLAS chunks per thread, with a token count that fills neither
    the last chunk nor the last Sinkhorn block; parameters that require grad (the kernels' BLAS calls run on pool
    threads, whose grad mode is their own)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    try:
        fused = _hyper_connection_grads(4, 20, torch.float32, True, kernels, tokens=(5, 421))
        eager = _hyper_connection_grads(4, 20, torch.float32, False, tokens=(5, 421), reference="eager")
    finally:
        torch.set_num_threads(threads)
    for name, a, b in zip(("out", "streams", "phi", "bias", "gate", "weight"), fused, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)


def _losses_and_grads(model, inputs):
    loss = model(**inputs).loss
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize(
    "name,model_class",
    [("tiny.json", MhcForCausalLM), ("tiny_image.json", MhcForImageClassification)],
)
def test_models_on_the_fused_kernels_train_like_the_eager_models(kernels, monkeypatch, name, model_class):
    calls = []
    real = ops_mhc._FusedRead.apply
    monkeypatch.setattr(ops_mhc._FusedRead, "apply", lambda *args: calls.append(1) or real(*args))
    torch.manual_seed(0)
    quiet = {"hidden_dropout": 0.0} if name == "tiny.json" else {"hidden_dropout": 0.0, "mask_ratio": 0.0}
    eager = model_class(_config(name, hyper_connection_implementation="eager", **quiet)).train()
    fused = model_class(_config(name, hyper_connection_implementation="auto", **quiet)).train()
    with torch.no_grad():  # away from the init, so that every coefficient path carries gradient
        for module in eager.modules():
            if isinstance(module, MhcHyperConnection) and module.n > 1:
                module.bias.add_(0.5 * torch.randn(module.bias.shape))
                module.gate.fill_(0.5)
    fused.load_state_dict(eager.state_dict())
    generator = torch.Generator().manual_seed(1)
    if name == "tiny.json":
        ids = torch.randint(1, 64, (2, 16), generator=generator)
        inputs = {"input_ids": ids, "labels": ids}
    else:
        inputs = {"pixel_values": torch.randn(3, 1, 8, 8, generator=generator), "labels": torch.tensor([0, 2, 1])}
    eager_loss, eager_grads = _losses_and_grads(eager, inputs)
    assert not calls
    fused_loss, fused_grads = _losses_and_grads(fused, inputs)
    assert len(calls) == 2 * fused.config.num_hidden_layers  # every hyper-connection ran fused
    torch.testing.assert_close(fused_loss, eager_loss, rtol=1e-5, atol=1e-6)
    for key, grad in eager_grads.items():
        assert grad is not None and fused_grads[key] is not None, key
        torch.testing.assert_close(fused_grads[key], grad, rtol=1e-4, atol=1e-6, msg=key)


def test_gradient_checkpointing_on_the_fused_kernels(kernels):
    torch.manual_seed(0)
    model = MhcForCausalLM(_config("tiny.json", hidden_dropout=0.0)).train()
    ids = torch.randint(1, 64, (2, 12))
    _, plain = _losses_and_grads(model, {"input_ids": ids, "labels": ids})
    model.zero_grad()
    model.activation_checkpointing_enable()
    _, checkpointed = _losses_and_grads(model, {"input_ids": ids, "labels": ids})
    for key, grad in plain.items():
        torch.testing.assert_close(checkpointed[key], grad, msg=key)


def test_auto_falls_back_to_eager_when_the_kernels_cannot_be_built(monkeypatch, caplog):
    monkeypatch.setattr(modeling_mhc, "load_cpu_kernels", lambda: None)
    monkeypatch.setattr(modeling_mhc, "cpu_kernels_error", lambda: "RuntimeError: no compiler")
    monkeypatch.setattr(
        ops_mhc._FusedRead, "apply", lambda *args: pytest.fail("the fused path ran without its kernels")
    )
    modeling_mhc.logger.warning_once.cache_clear()
    torch.manual_seed(0)
    model = MhcForCausalLM(_config("tiny.json")).train()
    reference = MhcForCausalLM(_config("tiny.json", hyper_connection_implementation="eager")).train()
    reference.load_state_dict(model.state_dict())
    ids = torch.randint(1, 64, (2, 12))
    logger = logging.getLogger("transformers")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="transformers"):
            torch.manual_seed(5)
            loss = model(input_ids=ids, labels=ids).loss
            model(input_ids=ids, labels=ids)
    finally:
        logger.removeHandler(caplog.handler)
    torch.manual_seed(5)
    torch.testing.assert_close(loss, reference(input_ids=ids, labels=ids).loss)
    warnings = [r.getMessage() for r in caplog.records if "fused CPU kernels could not be built" in r.getMessage()]
    assert len(warnings) == 1 and "no compiler" in warnings[0]


def test_a_failed_build_is_reported_by_its_first_line(monkeypatch):
    log = (
        "RuntimeError: Error building extension 'hfm_mhc_cpu': [1/2] c++ main.cpp\nmain.cpp:1: error: ...\nninja: stop"
    )
    monkeypatch.setitem(kernels_mhc._STATE, "error", log)
    assert kernels_mhc.load_error() == "RuntimeError: Error building extension 'hfm_mhc_cpu': [1/2] c++ main.cpp"
    assert kernels_mhc.load_error(full=True) == log


def test_evaluation_and_non_auto_settings_never_build_the_kernels(monkeypatch):
    monkeypatch.setattr(modeling_mhc, "load_cpu_kernels", lambda: pytest.fail("the kernels were requested"))
    ids = torch.randint(1, 64, (2, 12))
    model = MhcForCausalLM(_config("tiny.json")).eval()
    model(input_ids=ids, labels=ids)  # eval: eager
    model.generate(ids, max_new_tokens=3, do_sample=False)
    model.train()
    with torch.no_grad():
        model(input_ids=ids)  # training mode without gradients: eager
    MhcForCausalLM(_config("tiny.json", hyper_connection_implementation="eager")).train()(input_ids=ids, labels=ids)
    MhcForCausalLM(_config("tiny.json", hyper_connection_type="hc")).train()(input_ids=ids, labels=ids)
    MhcForCausalLM(_config("tiny.json", dynamic_hyper_connections=False)).train()(input_ids=ids, labels=ids)
    MhcForCausalLM(_config("tiny.json", expansion_rate=1)).train()(input_ids=ids, labels=ids)
    with pytest.raises(ValueError, match="hyper_connection_implementation"):
        _config("tiny.json", hyper_connection_implementation="triton")
