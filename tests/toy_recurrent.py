"""A tiny recurrent causal LM whose cache is not a `DynamicCache`, to prove the battery's state and generation checks.

The model is a stack of gated linear recurrences, h_t = a_t * h_{t-1} + (1 - a_t) * W_x x_t with a_t = sigmoid(W_a x_t),
each with a residual connection, between an embedding and an LM head. Its cache, `ToyRecurrentCache`, holds one
(batch, hidden) state per layer and the number of tokens seen; it is no transformers `Cache`, so `generate` reaches
it only through the model's own `prepare_inputs_for_generation` (the pattern of transformers' RWKV and Mamba models:
the model builds its state itself, `_is_stateful = True`, and decoding feeds only the tokens not yet seen).

`ToyRecurrentConfig(drop_state=True)` builds a deliberately broken variant that ignores the state passed back (it
restarts from zeros on every call), so a test can show that the chunked-state check fails on it.
"""

import torch
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast


# transformers renamed the cache field of model outputs (and the forward argument) from `past_key_values` to `cache`
CACHE_NAME = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class ToyRecurrentConfig(PretrainedConfig):
    model_type = "hfm_test_toy_rnn"

    def __init__(self, vocab_size=37, hidden_size=16, num_hidden_layers=2, drop_state=False, use_cache=True, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.drop_state = drop_state
        self.use_cache = use_cache
        super().__init__(**kwargs)


class ToyRecurrentCache:
    """Per-layer recurrent states (batch, hidden) and the count of tokens they summarise (not a transformers Cache)."""

    is_compileable = False

    def __init__(self, num_layers):
        self.states = [None] * num_layers
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx=0):
        return self.seen_tokens

    def reorder_cache(self, beam_idx):
        self.states = [None if s is None else s.index_select(0, beam_idx.to(s.device)) for s in self.states]


class ToyRecurrentLayer(nn.Module):
    def __init__(self, hidden_size):
        super().__init__()
        self.input_proj = nn.Linear(hidden_size, hidden_size)
        self.gate_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden_states, state):
        """(B, L, E) and a (B, E) state or None -> (B, L, E) outputs and the (B, E) state after the last token."""
        gates = torch.sigmoid(self.gate_proj(hidden_states))
        inputs = self.input_proj(hidden_states)
        h = hidden_states.new_zeros(hidden_states.shape[0], hidden_states.shape[2]) if state is None else state
        outputs = []
        for t in range(hidden_states.shape[1]):  # a readable loop: the toy sequences are a few tokens long
            h = gates[:, t] * h + (1 - gates[:, t]) * inputs[:, t]
            outputs.append(h)
        return hidden_states + torch.stack(outputs, dim=1), h


class ToyRecurrentForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = ToyRecurrentConfig
    _is_stateful = True

    def __init__(self, config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(ToyRecurrentLayer(config.hidden_size) for _ in range(config.num_hidden_layers))
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls):
        return False  # generate must not build a DynamicCache: the model creates its own cache

    def prepare_inputs_for_generation(self, input_ids, cache=None, attention_mask=None, use_cache=None, **kwargs):
        """Only the tokens the state has not seen yet, with the state; the mask only while nothing is cached."""
        cache = kwargs.pop("past_key_values", cache)
        if cache is not None and cache.get_seq_length() > 0:
            input_ids = input_ids[:, cache.get_seq_length() :]
            attention_mask = None
        return {"input_ids": input_ids, "attention_mask": attention_mask, CACHE_NAME: cache, "use_cache": use_cache}

    def forward(self, input_ids=None, attention_mask=None, cache=None, labels=None, use_cache=None, **kwargs):
        """Logits (B, L, V); with `use_cache` the `ToyRecurrentCache` to pass back as `cache`/`past_key_values`."""
        legacy = kwargs.pop("past_key_values", None)
        cache = cache if cache is not None else legacy
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError("attention_mask with padding is not supported by this recurrent model (pass none)")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if cache is not None and not isinstance(cache, ToyRecurrentCache):
            raise ValueError(f"cache must be a ToyRecurrentCache; got {type(cache).__name__}")
        if use_cache and cache is None:
            cache = ToyRecurrentCache(self.config.num_hidden_layers)
        hidden_states = self.embed_tokens(input_ids)
        for i, layer in enumerate(self.layers):
            state = None if cache is None or self.config.drop_state else cache.states[i]
            hidden_states, state = layer(hidden_states, state)
            if cache is not None:
                cache.states[i] = state
        if cache is not None:
            cache.seen_tokens += input_ids.shape[1]
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_NAME: cache if use_cache else None})


def build_toy(seed=0, **config_overrides):
    """A small eval-mode toy model with seeded weights."""
    torch.manual_seed(seed)
    return ToyRecurrentForCausalLM(ToyRecurrentConfig(pad_token_id=0, **config_overrides)).eval()
