"""Text corpora for causal LMs: local files through `datasets`, a character-level tokenizer, packing into blocks."""

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


def char_tokenizer(texts):
    """A character-level `PreTrainedTokenizerFast` over the characters of `texts`; id 0 is the pad token."""
    chars = sorted(set("".join(texts)))
    vocab = {PAD_TOKEN: 0, **{char: i + 1 for i, char in enumerate(chars)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=PAD_TOKEN))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD_TOKEN)


def bpe_tokenizer(texts, vocab_size=1024):
    """A byte-level BPE `PreTrainedTokenizerFast` (GPT-2 style: any text encodes, no unknown token) trained on
    `texts` with `vocab_size` entries; id 0 is the pad token."""
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
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD_TOKEN)


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
