"""Cache glue shared by the causal LMs of hf_models: the cache argument's two names, a default cache.

Canonical copy: hf_models/_shared/shared_cache.py. `scripts/sync_shared.py` writes byte-identical copies into each
model folder that imports it (they ship to the Hub with that model); `--check` fails on any drift.
"""

from transformers.cache_utils import Cache, DynamicCache


def pop_cache(cache, kwargs):
    """The cache passed as `cache` (transformers >= 5.24) or `past_key_values` (earlier), not both."""
    legacy = kwargs.pop("past_key_values", None)
    if cache is not None and legacy is not None:
        raise ValueError("Pass the cache as `cache` or `past_key_values`, not both")
    return cache if cache is not None else legacy


def prepare_cache(cache, use_cache, config, new_cache=None, cache_types=(Cache,)):
    """`new_cache(config)` (default: a `DynamicCache`) when a cache is needed and none was given; a clear error for a
    cache that is none of `cache_types` (a recurrent model passes its own state class for both)."""
    if use_cache and cache is None:
        cache = new_cache(config) if new_cache is not None else DynamicCache(config=config)
    if cache is not None and not isinstance(cache, cache_types):
        names = " or ".join(kind.__name__ for kind in cache_types)
        raise ValueError(f"cache must be a {names} (e.g. what the model returned); got {type(cache).__name__}")
    return cache
