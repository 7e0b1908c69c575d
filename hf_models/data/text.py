"""Text corpora for causal LMs: local files through `datasets`; character-level, byte-level BPE and GPT-2 (tiktoken)
tokenizers as `PreTrainedTokenizerFast`; packing into blocks."""

import hashlib
import os
import tempfile
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast


PAD_TOKEN = "<pad>"


def load_text_splits(path, val_fraction=0.1):
    """A text file as a `DatasetDict` with one document per split: the first (1 - val_fraction) of the characters
    for `train`, the rest for `validation` (nanoGPT's split of tinyshakespeare)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"corpus file not found: {path}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction!r} is invalid: must be in (0, 1)")
    text = load_dataset("text", data_files=str(path), sample_by="document", split="train")[0]["text"]
    cut = int(len(text) * (1 - val_fraction))
    return DatasetDict(
        train=Dataset.from_dict({"text": [text[:cut]]}), validation=Dataset.from_dict({"text": [text[cut:]]})
    )


def load_text_files(train_file, validation_file, num_proc=None):
    """Two local text files as a `DatasetDict` (`train`, `validation`), one row per line with its line break kept,
    through `datasets`' text builder (so tokenisation is cached and can run in `num_proc` processes)."""
    for name, path in (("corpus", train_file), ("validation_file", validation_file)):
        if not Path(path).is_file():
            raise ValueError(f"{name} file not found: {path}")
    return load_dataset(
        "text",
        data_files={"train": str(train_file), "validation": str(validation_file)},
        keep_linebreaks=True,
        num_proc=num_proc,
    )


def _with_special_tokens(tokenizer):
    """`tokenizer` as a `PreTrainedTokenizerFast` whose id-0 token is bos, eos and pad at once (GPT-2's convention
    with `<|endoftext|>`), so clients that start a document with bos (or eos) work. Encoding adds neither
    (add_bos_token / add_eos_token off): the ids of a text, the vocabulary and so training stay as they were."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=PAD_TOKEN,
        eos_token=PAD_TOKEN,
        pad_token=PAD_TOKEN,
        add_bos_token=False,
        add_eos_token=False,
    )


def char_tokenizer(texts):
    """A character-level `PreTrainedTokenizerFast` over the characters of `texts`; id 0 is the bos, eos and pad
    token (and stands for an unknown character)."""
    chars = sorted(set("".join(texts)))
    vocab = {PAD_TOKEN: 0, **{char: i + 1 for i, char in enumerate(chars)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=PAD_TOKEN))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character
    tokenizer.decoder = decoders.Fuse()
    return _with_special_tokens(tokenizer)


def bpe_tokenizer(texts, vocab_size=1024):
    """A byte-level BPE `PreTrainedTokenizerFast` (GPT-2 style: any text encodes, no unknown token) trained on
    `texts` with `vocab_size` entries; id 0 is the bos, eos and pad token."""
    if vocab_size < 257 + 1:
        raise ValueError(
            f"bpe vocab_size={vocab_size} is invalid: byte-level BPE needs at least 258 (256 bytes + pad + 1)"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return _with_special_tokens(tokenizer)


GPT2_TIKTOKEN_URLS = {
    # tiktoken's own download locations; its cache names a file by the SHA-1 of the URL
    "r50k_base": ("https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken",),
    "gpt2": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
    ),
}
ENDOFTEXT = "<|endoftext|>"


def _tiktoken_cache_dir():
    """The folder tiktoken caches its encodings in (its own rule: TIKTOKEN_CACHE_DIR, DATA_GYM_CACHE_DIR, temp)."""
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(variable):
            return Path(os.environ[variable])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def gpt2_tokenizer(tiktoken_file=None):
    """GPT-2's byte-level BPE (50257 ids, `<|endoftext|>` as end and pad token) read through tiktoken and converted
    to a `PreTrainedTokenizerFast` that encodes exactly as tiktoken does.

    The encoding comes from `tiktoken_file` (a local `r50k_base.tiktoken`, the GPT-2 ranks in tiktoken's format), or
    else from tiktoken's cache when an earlier online `tiktoken.get_encoding("gpt2")` left it there. Nothing is
    downloaded: without either, a `ValueError` says what to provide.
    """
    try:
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe
        from tiktoken_ext.openai_public import r50k_pat_str
    except ImportError:
        raise ValueError("data.tokenizer='gpt2' needs the tiktoken package: pip install tiktoken") from None
    if tiktoken_file is not None:
        if not Path(tiktoken_file).is_file():
            raise ValueError(f"data.tiktoken_file={str(tiktoken_file)!r} does not exist")
        ranks = load_tiktoken_bpe(str(tiktoken_file))
    else:
        cache = _tiktoken_cache_dir()
        cached = [
            name
            for name, urls in GPT2_TIKTOKEN_URLS.items()
            if all((cache / hashlib.sha1(url.encode()).hexdigest()).is_file() for url in urls)
        ]
        if not cached:
            raise ValueError(
                "data.tokenizer='gpt2': GPT-2's tiktoken encoding is not available offline. Set data.tiktoken_file "
                f"to a local copy of r50k_base.tiktoken (from {GPT2_TIKTOKEN_URLS['r50k_base'][0]}), or fill "
                f"tiktoken's cache ({cache}; TIKTOKEN_CACHE_DIR moves it) by running tiktoken.get_encoding('gpt2') "
                "once on a machine with internet access"
            )
        ranks = tiktoken.get_encoding(cached[0])._mergeable_ranks
    return tiktoken_ranks_tokenizer(ranks, r50k_pat_str, {ENDOFTEXT: len(ranks)})


def tiktoken_ranks_tokenizer(ranks, pattern, special_tokens):
    """A `PreTrainedTokenizerFast` from tiktoken mergeable ranks (bytes -> id), its split pattern and its special
    tokens (name -> id, placed after the ranks); the first special token ends text and pads."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _RanksConverter(TikTokenConverter):
        def load_tiktoken_bpe(self, _source):
            return ranks

    if sorted(special_tokens.values()) != list(range(len(ranks), len(ranks) + len(special_tokens))):
        raise ValueError(f"special token ids {special_tokens} must follow the {len(ranks)} ranks")
    backend = _RanksConverter(pattern=pattern, extra_special_tokens=list(special_tokens)).converted()
    end = next(iter(special_tokens))
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=end, pad_token=end)


def pack_blocks(dataset, tokenizer, block_size, num_proc=None):
    """Tokenise a text `Dataset` and cut the token stream into blocks of `block_size` ids (labels = input_ids; the
    model shifts them). The incomplete tail is dropped."""
    if block_size < 2:
        raise ValueError(f"block_size={block_size} is invalid: must be >= 2")

    def tokenize(batch):
        return {"ids": tokenizer(batch["text"], add_special_tokens=False)["input_ids"]}

    def group(batch):
        stream = [token for ids in batch["ids"] for token in ids]
        usable = len(stream) // block_size * block_size
        blocks = [stream[i : i + block_size] for i in range(0, usable, block_size)]
        return {"input_ids": blocks, "labels": [list(b) for b in blocks]}

    tokenized = dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, num_proc=num_proc)
    packed = tokenized.map(group, batched=True, remove_columns=["ids"], num_proc=num_proc)
    if len(packed) == 0:
        raise ValueError(f"the corpus has fewer than block_size={block_size} tokens")
    return packed
