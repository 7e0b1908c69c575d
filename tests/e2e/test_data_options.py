"""Data options of `hf-models train`: GPT-2's encoding through tiktoken, a separate held-out file with
multi-process tokenisation, and argument errors (the mixed-precision choice: tests/test_precision.py)."""

import base64
import json

import pytest
import tiktoken
from tiktoken_ext.openai_public import r50k_pat_str

from hf_models.cli import main
from hf_models.data import gpt2_tokenizer
from hf_models.data.text import ENDOFTEXT, GPT2_TIKTOKEN_URLS
from hf_models.training.arguments import parse_train_args


TINY = "configs/train/ngt_tinyshakespeare_tiny.yaml"
MERGES = [b"th", b"he", b"the", b" t", b" the", b"in", b"ing", b"ou", b"you", b"e\n", b"RO", b"ME", b"ROME", b"ROMEO"]


@pytest.fixture
def ranks_file(tmp_path):
    """A small encoding in tiktoken's file format (base64 token, rank): the 256 bytes and a few merges."""
    ranks = {bytes([i]): i for i in range(256)}
    for merge in MERGES:
        ranks[merge] = len(ranks)
    path = tmp_path / "tiny.tiktoken"
    path.write_text("".join(f"{base64.b64encode(token).decode()} {rank}\n" for token, rank in ranks.items()))
    return path, ranks


def test_gpt2_tokenizer_encodes_exactly_as_tiktoken(ranks_file, shared_data):
    path, ranks = ranks_file
    tokenizer = gpt2_tokenizer(path)
    reference = tiktoken.Encoding(
        "tiny", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={ENDOFTEXT: len(ranks)}
    )
    text = (shared_data / "tinyshakespeare.txt").read_text()[:30000] + " héllo ☃ you're singing\n\n  the end"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == reference.encode(text)
    assert tokenizer.decode(ids) == text
    assert len(tokenizer) == len(ranks) + 1
    assert tokenizer.eos_token == tokenizer.pad_token == ENDOFTEXT
    assert tokenizer(f"the{ENDOFTEXT}")["input_ids"] == reference.encode(f"the{ENDOFTEXT}", allowed_special="all")


def test_gpt2_tokenizer_offline_without_the_encoding_says_what_to_provide(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(ValueError, match="tiktoken_file") as error:
        gpt2_tokenizer()
    assert "r50k_base.tiktoken" in str(error.value) and "empty-cache" in str(error.value)
    with pytest.raises(ValueError, match="does not exist"):
        gpt2_tokenizer(tmp_path / "missing.tiktoken")


def test_gpt2_tokenizer_reads_tiktokens_cache(ranks_file, tmp_path, monkeypatch):
    """An encoding tiktoken cached earlier (file named by the SHA-1 of its URL) is found without a download; the
    hash check fails on the small stand-in file, which proves tiktoken itself read the cache entry."""
    import hashlib

    path, _ = ranks_file
    cache = tmp_path / "cache"
    cache.mkdir()
    url = GPT2_TIKTOKEN_URLS["r50k_base"][0]
    (cache / hashlib.sha1(url.encode()).hexdigest()).write_bytes(path.read_bytes())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    calls = []
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: calls.append(name) or (_ for _ in ()).throw(OSError))
    with pytest.raises(OSError):
        gpt2_tokenizer()
    assert calls == ["r50k_base"]


def test_train_with_the_gpt2_tokenizer(ranks_file, tmp_path, shared_data):
    path, ranks = ranks_file
    out = tmp_path / "run"
    assert main(["train", TINY, "--output_dir", str(out), "--max_steps", "2", "--tokenizer", "gpt2",
                 "--tiktoken_file", str(path), "--max_eval_blocks", "4"]) == 0  # fmt: skip
    assert json.loads((out / "config.json").read_text())["vocab_size"] == len(ranks) + 1
    results = json.loads((out / "eval_results.json").read_text())
    assert results["eval_characters"] > results["eval_tokens"]


def test_validation_file_and_multiprocess_tokenisation(tmp_path, shared_data):
    """A train file with a separate held-out file, one row per line, tokenised in 2 processes: the packed blocks
    are the same as tokenising in one process, and evaluate reads the held-out file."""
    wikitext = tmp_path / "wikitext"  # the first lines of WikiText-2's files keep the run short
    wikitext.mkdir()
    for name, lines in (("valid.txt", 1500), ("test.txt", 300)):
        text = (shared_data / "wikitext-2" / name).read_text().splitlines(keepends=True)
        (wikitext / name).write_text("".join(text[:lines]))
    out = tmp_path / "run"
    args = ["--corpus", str(wikitext / "valid.txt"), "--validation_file", str(wikitext / "test.txt"),
            "--tokenizer", "bpe", "--bpe_vocab_size", "400", "--max_eval_blocks", "8"]  # fmt: skip
    assert main(["train", TINY, "--output_dir", str(out), "--max_steps", "2", "--preprocessing_num_workers", "2",
                 *args]) == 0  # fmt: skip
    results = json.loads((out / "eval_results.json").read_text())
    held_out = (wikitext / "test.txt").read_text()
    # every held-out character is read (less the tail that does not fill a block and the first token of a block)
    assert 0.9 * len(held_out) < results["eval_characters"] <= len(held_out)
    (out / "eval_results.json").unlink()
    assert main(["evaluate", str(out)]) == 0
    again = json.loads((out / "eval_results.json").read_text())
    assert abs(again["eval_loss"] - results["eval_loss"]) < 0.02

    from transformers import AutoTokenizer

    from hf_models.data import load_text_files, pack_blocks

    tokenizer = AutoTokenizer.from_pretrained(out)
    splits = load_text_files(wikitext / "valid.txt", wikitext / "test.txt")
    one = pack_blocks(splits["validation"], tokenizer, 32)
    two = pack_blocks(splits["validation"], tokenizer, 32, num_proc=2)
    stream = lambda blocks: [t for block in blocks["input_ids"] for t in block]  # noqa: E731
    # per-worker packing drops at most one partial block per worker
    assert abs(len(one) - len(two)) <= 2 and stream(two)[:5000] == stream(one)[:5000]


def test_data_argument_errors(tmp_path):
    for extra, message in [
        (["--tokenizer", "words"], "data.tokenizer='words'"),
        (["--preprocessing_num_workers", "0"], "preprocessing_num_workers=0"),
        (["--precision", "fp8"], "precision='fp8'"),
        (["--push_to_hub", "true"], "hf-models push"),  # Trainer's push would overwrite the model card
    ]:
        with pytest.raises(ValueError, match=message):
            parse_train_args(TINY, ["--output_dir", str(tmp_path), *extra])
    with pytest.raises(ValueError, match="validation_file"):
        parse_train_args(TINY, ["--output_dir", str(tmp_path), "--corpus", "", "--dataset", "x",
                                "--validation_file", "v.txt"])  # fmt: skip


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_char_and_bpe_tokenizers_have_bos_eos_pad_without_changing_the_ids(kind, tmp_path, shared_data):
    """Id 0 is bos, eos and pad (GPT-2's convention), so a client that starts a document with bos works; encoding
    adds no special token, so a text's ids, the vocabulary size and hence training stay as they were."""
    from transformers import AutoTokenizer

    from hf_models.data import bpe_tokenizer, char_tokenizer
    from hf_models.data.text import PAD_TOKEN

    corpus = (shared_data / "tinyshakespeare.txt").read_text()[:20000]
    tokenizer = char_tokenizer([corpus]) if kind == "char" else bpe_tokenizer([corpus], 300)
    text = "ROMEO:\nGood night, good night! parting is such sweet sorrow\n"
    vocab = tokenizer.get_vocab()
    expected = [vocab[piece] for piece in tokenizer.tokenize(text)]  # the vocabulary lookup of the pieces, only
    if kind == "char":  # the ids the char tokenizer always gave: 0 for the pad, then the sorted characters
        assert expected == [sorted(set(corpus)).index(char) + 1 for char in text]
        assert len(tokenizer) == len(set(corpus)) + 1
    else:
        assert len(tokenizer) == 300
    assert vocab[PAD_TOKEN] == 0
    for name in ("bos", "eos", "pad"):
        assert getattr(tokenizer, f"{name}_token") == PAD_TOKEN and getattr(tokenizer, f"{name}_token_id") == 0
    for encoder in (tokenizer, reload(tokenizer, tmp_path, AutoTokenizer)):
        assert encoder(text)["input_ids"] == expected  # no bos / eos added
        assert encoder(text, add_special_tokens=False)["input_ids"] == expected
        assert (encoder.bos_token_id, encoder.eos_token_id, encoder.pad_token_id) == (0, 0, 0)
        assert len(encoder) == len(tokenizer)
        assert encoder.decode(expected) == text


def reload(tokenizer, folder, auto_class):
    tokenizer.save_pretrained(folder)
    return auto_class.from_pretrained(folder)


def test_a_trained_run_records_bos_and_eos_in_its_config(tmp_path):
    out = tmp_path / "run"
    assert main(["train", TINY, "--output_dir", str(out), "--max_steps", "1", "--sample_max_new_tokens", "0",
                 "--max_eval_blocks", "2"]) == 0  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (0, 0, 0)
