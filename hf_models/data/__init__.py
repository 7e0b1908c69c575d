"""Data machinery: corpora through `datasets`, tokenizers through `tokenizers`."""

from .images import image_processor_for, load_mnist, random_shift
from .text import bpe_tokenizer, char_tokenizer, gpt2_tokenizer, load_text_files, load_text_splits, pack_blocks


__all__ = [
    "bpe_tokenizer",
    "char_tokenizer",
    "gpt2_tokenizer",
    "image_processor_for",
    "load_text_files",
    "load_mnist",
    "load_text_splits",
    "pack_blocks",
    "random_shift",
]
