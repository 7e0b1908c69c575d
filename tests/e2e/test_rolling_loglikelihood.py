"""An export scored the way standard evaluation clients score any Hugging Face causal LM: lm-evaluation-harness's
`loglikelihood_rolling` (every document starts from the tokenizer's bos token, else its eos token; disjoint windows of
at most max_length tokens), written out here so the test needs only transformers."""

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_models.cli import main


TINY = "configs/train/ngt_tinyshakespeare_tiny.yaml"
pytestmark = pytest.mark.slow


def rolling_windows(tokens, prefix_token, max_length):
    """(context, continuation) pairs as lm-evaluation-harness's `get_rolling_token_windows` (context_len=1) and
    `make_disjoint_window` make them: the first window predicts its tokens from the prefix token, each later one
    predicts the next tokens from up to max_length - 1 tokens before them; every token is predicted once."""
    windows, predicted = [], 0
    first = min(max_length, len(tokens))
    windows.append(([prefix_token], tokens[:first]))
    predicted += first
    while predicted < len(tokens):
        length = min(len(tokens) - predicted, max_length)
        end = predicted + length
        context = tokens[max(0, end - max_length - 1) : end - 1]
        windows.append((context[: len(context) - (length - 1)], tokens[end - length : end]))
        predicted += length
    return windows


@torch.no_grad()
def continuation_logprob(model, context, continuation, max_length):
    """Sum of log p(continuation | context), one forward pass over the last max_length tokens (the harness's way)."""
    ids = (context + continuation)[-(max_length + 1) :][:-1]
    logits = model(input_ids=torch.tensor([ids])).logits[0, -len(continuation) :].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return logprobs.gather(1, torch.tensor(continuation)[:, None]).sum()


def loglikelihood_rolling(model, tokenizer, document):
    tokens = tokenizer(document)["input_ids"]
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    assert prefix is not None, "the tokenizer defines neither a bos nor an eos token"
    max_length = model.config.max_position_embeddings
    windows = rolling_windows(tokens, prefix, max_length)
    total = sum(continuation_logprob(model, context, continuation, max_length) for context, continuation in windows)
    return total, tokens, windows


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    run, out = tmp_path_factory.mktemp("run"), tmp_path_factory.mktemp("export") / "model"
    assert main(["train", TINY, "--output_dir", str(run), "--max_steps", "4", "--save_steps", "4",
                 "--sample_max_new_tokens", "0", "--max_eval_blocks", "2"]) == 0  # fmt: skip
    assert main(["export", str(run), str(out)]) == 0
    return out


def test_the_export_has_bos_eos_and_pad_tokens(export):
    tokenizer = AutoTokenizer.from_pretrained(export)
    model = AutoModelForCausalLM.from_pretrained(export, trust_remote_code=True).eval()
    assert tokenizer.bos_token_id == tokenizer.eos_token_id == tokenizer.pad_token_id == 0
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (0, 0, 0)
    generation = model.generation_config
    assert (generation.bos_token_id, generation.eos_token_id, generation.pad_token_id) == (0, 0, 0)
    prompt = tokenizer("ROMEO:\n", return_tensors="pt")
    output = model.generate(**prompt, max_new_tokens=5, do_sample=True, top_k=40)
    assert output.shape[1] <= prompt["input_ids"].shape[1] + 5
    assert tokenizer.decode(output[0], skip_special_tokens=True).startswith("ROMEO:\n")


def test_rolling_loglikelihood_of_held_out_text(export, shared_data):
    model = AutoModelForCausalLM.from_pretrained(export, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(export)
    max_length = model.config.max_position_embeddings
    document = (shared_data / "tinyshakespeare.txt").read_text()[-2000:]  # inside the run's validation split
    total, tokens, windows = loglikelihood_rolling(model, tokenizer, document)
    assert len(tokens) == len(document) and 0 not in tokens  # a char model: one token per character, no bos
    assert math.isfinite(total) and total < 0
    assert [t for _, continuation in windows for t in continuation] == tokens  # each token predicted exactly once
    assert len(windows) == math.ceil(len(tokens) / max_length)
    assert all(len(context) + len(continuation) <= max_length + 1 for context, continuation in windows)
    eval_loss = json.loads((export / "eval_results.json").read_text())["eval_loss"]
    assert abs(-float(total) / len(tokens) - eval_loss) < 0.5, (-float(total) / len(tokens), eval_loss)


def test_one_window_equals_a_single_forward_pass(export):
    model = AutoModelForCausalLM.from_pretrained(export, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(export)
    max_length = model.config.max_position_embeddings
    document = "ROMEO:\nGood night, good night! parting is such sweet sorrow"[: max_length - 1]
    total, tokens, windows = loglikelihood_rolling(model, tokenizer, document)
    assert len(windows) == 1 and windows[0] == ([tokenizer.bos_token_id], tokens)
    with torch.no_grad():  # bos + the document but its last token, predicting every document token
        ids = torch.tensor([[tokenizer.bos_token_id, *tokens[:-1]]])
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    expected = logprobs.gather(1, torch.tensor(tokens)[:, None]).sum()
    torch.testing.assert_close(total, expected)
