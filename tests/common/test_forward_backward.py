"""Battery: forward/backward shapes, finite loss, a gradient on every parameter, determinism, checkpointing."""

import torch
from conftest import skip_if_listed


def _loss_and_grads(spec, model, inputs):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    out = model(**inputs)
    spec.loss(out).backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_forward_shapes_and_finite_loss(spec):
    model = spec.build()
    inputs = spec.make_inputs(model.config, batch=2, seq=20)
    out = model(**inputs)
    loss = spec.loss(out)
    assert loss.ndim == 0 and torch.isfinite(loss)
    main = out[spec.output_key]
    assert main.shape[0] == 2 and torch.isfinite(main).all()
    if spec.output_key == "logits" and spec.can_generate:
        assert main.shape == (2, 20, model.config.vocab_size)


def test_every_trainable_parameter_gets_a_finite_nonzero_gradient(spec):
    model = spec.build()
    model.train()
    inputs = spec.make_inputs(model.config, batch=2, seq=20)
    _, grads = _loss_and_grads(spec, model, inputs)
    dead = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        grad = grads.get(name)
        if grad is None or not torch.isfinite(grad).all() or grad.abs().sum() == 0:
            dead.append(name)
    assert not dead, f"parameters without a finite non-zero gradient: {dead}"


def test_tuple_output_starts_with_the_loss(spec):
    model = spec.build().eval()
    inputs = spec.make_inputs(model.config, batch=2, seq=12)
    with torch.no_grad():
        as_dict = model(**inputs)
        as_tuple = model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple)
    # a head's tuple starts with the loss (Trainer reads it there); a backbone's with its main output
    torch.testing.assert_close(as_tuple[0], as_dict.loss if spec.has_loss else as_dict[spec.output_key])


def test_eval_is_deterministic(spec):
    model = spec.build().eval()
    inputs = spec.make_inputs(model.config, batch=2, seq=16)
    with torch.no_grad():
        first = model(**inputs)[spec.output_key]
        second = model(**inputs)[spec.output_key]
    assert torch.equal(first, second)


def test_gradient_checkpointing_matches(spec):
    skip_if_listed(spec, "gradient_checkpointing")
    model = spec.build()
    model.train()
    inputs = spec.make_inputs(model.config, batch=2, seq=20)
    out_ref, grads_ref = _loss_and_grads(spec, model, inputs)
    # transformers >= 5.2x names it "activation checkpointing"; older 5.x only has the gradient_* spelling
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert all(
        block.gradient_checkpointing for block in model.modules() if hasattr(block, "_gradient_checkpointing_func")
    )
    out_ckpt, grads_ckpt = _loss_and_grads(spec, model, inputs)
    torch.testing.assert_close(spec.loss(out_ckpt), spec.loss(out_ref))
    assert grads_ref.keys() == grads_ckpt.keys()
    for name in grads_ref:
        torch.testing.assert_close(grads_ckpt[name], grads_ref[name], rtol=1e-4, atol=1e-6, msg=name)
