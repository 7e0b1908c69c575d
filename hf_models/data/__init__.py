"""Data machinery: corpora through `datasets`, tokenizers through `tokenizers`."""

from .text import char_tokenizer, load_text_splits, pack_blocks


__all__ = ["char_tokenizer", "load_text_splits", "pack_blocks"]
