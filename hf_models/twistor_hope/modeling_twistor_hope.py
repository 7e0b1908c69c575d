"""Twistor-HOPE: a recurrent language model of Möbius-Twistor components in a HOPE / Nested-Learning stack.

Backbone (`TwistorHopeModel`): spinor embedding -> self-modifying recurrent block (twistor cells, adaptive Möbius
layer, feed-forward) -> continuum memory -> nested levels -> projection to `hidden_size` and LayerNorm. There is no
attention: the state of a sequence (cell states, the running mean of the adaptive layer, the memory slots) is carried
in a `TwistorHopeCache`, so decoding a token costs the same at every position.

Reference project: github.com/logos-42/Mobius-Twistor-model (`TwistorHopeArchitecture`), and "Nested Learning"
(Behrouz et al., NeurIPS 2025) for the continuum memory. Corrected here (see `TwistorHopeConfig` and
components_twistor_hope.py): an LM head with cross-entropy (the original regressed onto its own embeddings), causal
adaptive coupling (the original's global mean read the future), per-sequence memory with K distinct slots updated at
their own frequencies (the original kept one buffer shared by the batch, with identical slots), no state reset every
512 tokens, a working bidirectional mode, no training-only rescaling, the incidence constraint the original describes.

This file is shipped to the Hub next to the weights (it imports only torch, transformers and the files beside it).
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import ModelOutput, logging

from .components_twistor_hope import (
    AdaptiveMobiusLayer,
    IncidenceAttention,
    SpinorEmbedding,
    TwistorMemorySystem,
    TwistorNestedLearning,
    TwistorSelfModifyingRecurrent,
    TwistorTitansCell,
)
from .configuration_twistor_hope import TwistorHopeConfig
from .shared_cache import pop_cache
from .shared_compat import CACHE_FIELD
from .shared_token_inputs import (
    check_class_labels,
    check_labels,
    check_unused_arguments,
    require_tensor,
    select_logits_positions,
    validate_token_inputs,
)


logger = logging.get_logger(__name__)


class TwistorHopeCache:
    """The recurrent state of a batch of sequences (not a key/value cache; like the caches of transformers' Mamba and
    RWKV models it has a fixed size): per cell layer its h (B, n); the adaptive Möbius layer's running sum (B, D) and
    count (B, 1); the memory slots (B, K, D), their open chunk sums (B, K, D) and gate sums (B, K), and the tokens
    each row has seen (B,). `seen_tokens` counts the positions fed (padding included), which is what generation
    slices the next input by."""

    is_compileable = False

    def __init__(self):
        self.block = None
        self.memory = None
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx=0):
        return self.seen_tokens

    def tensors(self):
        """Every state tensor (for moving, checking, reordering)."""
        if self.block is None:
            return []
        return [*self.block["cells"], *self.block["context"], *self.memory]

    def _map(self, function):
        if self.block is None:
            return
        self.block = {
            "cells": [function(h) for h in self.block["cells"]],
            "context": tuple(function(t) for t in self.block["context"]),
        }
        self.memory = tuple(function(t) for t in self.memory)

    def reorder_cache(self, beam_idx):
        """Keep the rows `beam_idx` (beam search): every state tensor is indexed along the batch."""
        self._map(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats):
        self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices):
        self._map(lambda t: t[indices])


class TwistorHopePreTrainedModel(PreTrainedModel):
    config_class = TwistorHopeConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True  # per self-modifying block (the recurrence is recomputed in backward)
    _no_split_modules = ["TwistorSelfModifyingRecurrent"]
    _is_stateful = True

    @classmethod
    def _supports_default_dynamic_cache(cls):
        return False  # generate must not build a DynamicCache: the model creates its own state

    def nested_parameter_levels(self):
        """Parameter name -> nested level, for level-wise learning rates (`hf_models.training.nested`): level l's
        ω and π networks and its constraint critic (with `constraint_type="learned"`). The residual gates of all
        levels are one parameter each and train with the rest of the model."""
        base = self.base_model
        nested = base.nested
        if nested is None:
            return {}
        prefix = "" if base is self else f"{self.base_model_prefix}."
        levels = {}
        for name, _ in nested.named_parameters():
            parts = name.split(".")
            if parts[0] in ("omega_nets", "pi_nets"):
                levels[f"{prefix}nested.{name}"] = int(parts[1])
            elif parts[0] == "critics":  # critic 0 constrains the last level, critic i + 1 level i
                index = int(parts[1])
                levels[f"{prefix}nested.{name}"] = nested.levels - 1 if index == 0 else index - 1
        return levels

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        special = (
            AdaptiveMobiusLayer,
            IncidenceAttention,
            TwistorMemorySystem,
            TwistorNestedLearning,
            TwistorSelfModifyingRecurrent,
            TwistorTitansCell,
        )
        if isinstance(module, special):
            module.reset_special_parameters()


@dataclass
class TwistorHopeModelOutput(ModelOutput):
    """Output of `TwistorHopeModel`.

    Args:
        last_hidden_state: (B, L, hidden_size) after the final LayerNorm.
        cache: the `TwistorHopeCache` to pass back for the next tokens (`use_cache=True`).
        hidden_states: (embeddings, after the recurrent block, after the memory, after the nested levels, final) with
            `output_hidden_states=True`.
        constraint_loss: the nested levels' weighted constraint loss (a scalar; 0 without nested learning).
    """

    last_hidden_state: torch.FloatTensor | None = None
    cache: TwistorHopeCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    constraint_loss: torch.FloatTensor | None = None


class TwistorHopeModel(TwistorHopePreTrainedModel):
    """The Twistor-HOPE backbone. Unidirectional (the default) it is causal and stateful; with
    `config.bidirectional=True` it is an encoder (every cell layer read both ways; no cache)."""

    def __init__(self, config: TwistorHopeConfig):
        super().__init__(config)
        self.embed_tokens = SpinorEmbedding(config.vocab_size, config.hidden_size // 2)
        self.block = TwistorSelfModifyingRecurrent(config)
        self.memory = TwistorMemorySystem(config) if config.num_memories > 0 else None
        self.nested = TwistorNestedLearning(config) if config.use_nested_learning else None
        self.output_proj = nn.Linear(config.twistor_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        # training progress in [0, 1] for the nested levels' constraint weights (set_training_progress); 1 outside
        # a training run. A plain number, not a buffer: it describes a run, not the model (and a non-persistent
        # buffer is not restored by from_pretrained).
        self.training_progress = 1.0
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens.omega

    def set_input_embeddings(self, value):
        self.embed_tokens.omega = value

    def set_training_progress(self, progress):
        """Fraction of training done (0..1): the intermediate levels' constraint weight moves from the first to the
        second value of `config.level_constraint_weights`."""
        self.training_progress = min(max(float(progress), 0.0), 1.0)

    def level_constraint_weight(self):
        start, end = self.config.level_constraint_weights
        return start + (end - start) * self.training_progress

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        use_cache=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        r"""`input_ids` (B, L); `attention_mask` (B, cached + L) 0/1 padding mask: padding leaves the state unchanged,
        so left-padded rows give their tokens the outputs of the row alone; `cache`: a `TwistorHopeCache` returned by
        an earlier call (the state after those tokens)."""
        config = self.config
        cache = pop_cache(cache, kwargs)
        if inputs_embeds is not None:
            raise ValueError(
                "Twistor-HOPE embeds token ids as twistors (SpinorEmbedding); inputs_embeds is not supported"
            )
        if input_ids is None:
            raise ValueError("input_ids is required")
        if kwargs.get("output_attentions"):
            raise ValueError("output_attentions is not supported: Twistor-HOPE is recurrent and has no attention")
        check_unused_arguments(self, kwargs, logger)
        use_cache = use_cache if use_cache is not None else (config.use_cache and not self.training)
        if config.bidirectional and (use_cache or cache is not None):
            if cache is not None:
                raise ValueError("a bidirectional Twistor-HOPE encoder reads the whole sequence: it takes no cache")
            use_cache = False
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else config.return_dict
        if cache is not None and not isinstance(cache, TwistorHopeCache):
            raise ValueError(f"cache must be a TwistorHopeCache (what the model returned); got {type(cache).__name__}")
        past_length = cache.get_seq_length() if cache is not None else 0
        input_ids, attention_mask, position_ids = validate_token_inputs(
            config.vocab_size, config.max_position_embeddings, input_ids, attention_mask, position_ids, past_length
        )
        if cache is not None and cache.block is not None and cache.block["cells"][0].shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"cache holds the state of {cache.block['cells'][0].shape[0]} sequences; input_ids has "
                f"{input_ids.shape[0]} rows"
            )
        mask = None if attention_mask is None else attention_mask[:, -input_ids.shape[1] :]
        if mask is not None and bool(mask.all()):
            mask = None

        phase_positions = position_ids if config.phase_period is None else position_ids % config.phase_period
        hidden = self.embed_tokens(input_ids, phase_positions)
        states = [hidden] if output_hidden_states else None
        hidden, block_state = self.block(hidden, mask, None if cache is None else cache.block)
        if output_hidden_states:
            states.append(hidden)
        memory_state = None
        if self.memory is not None:
            hidden, memory_state = self.memory(hidden, mask, None if cache is None else cache.memory)
            if output_hidden_states:
                states.append(hidden)
        constraint = hidden.new_zeros(())
        if self.nested is not None:
            hidden, constraint = self.nested(hidden, self.level_constraint_weight())
            if output_hidden_states:
                states.append(hidden)
        hidden = self.norm(self.output_proj(hidden))
        if output_hidden_states:
            states.append(hidden)

        if use_cache:
            cache = cache if cache is not None else TwistorHopeCache()
            cache.block, cache.memory = block_state, memory_state
            cache.seen_tokens = past_length + input_ids.shape[1]
        output = TwistorHopeModelOutput(
            last_hidden_state=hidden,
            cache=cache if use_cache else None,
            hidden_states=tuple(states) if states is not None else None,
            constraint_loss=constraint,
        )
        return output if return_dict else output.to_tuple()


@dataclass
class TwistorHopeCausalLMOutput(CausalLMOutputWithPast):
    """`CausalLMOutputWithPast` plus the two parts of the loss: `loss` = `lm_loss` + `constraint_loss` (the nested
    levels' weighted constraint, see `TwistorNestedLearning`) in training; in eval mode `loss` is the LM loss alone,
    so eval loss and perplexity compare with other models."""

    lm_loss: torch.FloatTensor | None = None
    constraint_loss: torch.FloatTensor | None = None


class TwistorHopeForCausalLM(TwistorHopePreTrainedModel, GenerationMixin):
    """Twistor-HOPE with a language-modeling head. Generation carries the recurrent state (`TwistorHopeCache`): each
    new token costs the same work whatever its position."""

    def __init__(self, config: TwistorHopeConfig):
        super().__init__(config)
        if config.bidirectional:
            raise ValueError(
                "TwistorHopeConfig.bidirectional=True is invalid for TwistorHopeForCausalLM: a causal LM may not read "
                "later tokens (use TwistorHopeModel or TwistorHopeForSequenceClassification as an encoder)"
            )
        self.model = TwistorHopeModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def set_training_progress(self, progress):
        self.model.set_training_progress(progress)

    def prepare_inputs_for_generation(self, input_ids, cache=None, attention_mask=None, use_cache=None, **kwargs):
        """Only the tokens the state has not seen, with the state; the mask always covers every position (it places
        the new tokens and marks padding)."""
        cache = pop_cache(cache, kwargs)
        if cache is not None and cache.get_seq_length() > 0:
            input_ids = input_ids[:, cache.get_seq_length() :]
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, CACHE_FIELD: cache, "use_cache": use_cache}
        if "logits_to_keep" in kwargs:
            inputs["logits_to_keep"] = kwargs["logits_to_keep"]
        return inputs

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        output_hidden_states=None,
        return_dict=None,
        logits_to_keep=0,
        **kwargs,
    ):
        r"""Args as `LlamaForCausalLM`; `labels` (B, L) with -100 for ignored positions (shifted inside).
        `logits_to_keep`: an int n > 0 computes only the logits of the last n positions (generation)."""
        cache = pop_cache(cache, kwargs)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        labels = check_labels(labels, input_ids, self.config.vocab_size)
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        logits = self.lm_head(select_logits_positions(outputs.last_hidden_state, logits_to_keep))
        loss = lm_loss = None
        if labels is not None:
            lm_loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, num_items_in_batch=num_items_in_batch
            )
            loss = lm_loss + outputs.constraint_loss.to(lm_loss.dtype) if self.training else lm_loss
        output = TwistorHopeCausalLMOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            lm_loss=lm_loss,
            constraint_loss=outputs.constraint_loss,
            **{CACHE_FIELD: outputs.cache},
        )
        return output if return_dict else output.to_tuple()


@dataclass
class TwistorHopeSequenceClassifierOutput(ModelOutput):
    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    constraint_loss: torch.FloatTensor | None = None


class TwistorHopeForSequenceClassification(TwistorHopePreTrainedModel):
    """Twistor-HOPE as a sequence classifier (`num_labels` classes, or regression with `num_labels=1`, as
    transformers' sequence classifiers). The sequence is pooled as the mean of its tokens (padding excluded) when the
    backbone is bidirectional, else as its last real token (which has read the whole row)."""

    def __init__(self, config: TwistorHopeConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = TwistorHopeModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        kwargs.pop("num_items_in_batch", None)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        mask = torch.ones(hidden.shape[:2], device=hidden.device) if attention_mask is None else attention_mask
        mask = mask.to(hidden.dtype)
        if self.config.bidirectional:
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        else:  # the last real token of each row (rows may be left- or right-padded)
            positions = torch.arange(mask.shape[1], device=hidden.device)
            last = (positions * (mask > 0)).argmax(-1)
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        logits = self.score(pooled)
        loss = None
        if labels is not None:
            loss = self._loss(logits, labels)
            if self.training:
                loss = loss + outputs.constraint_loss.to(loss.dtype)
        output = TwistorHopeSequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, constraint_loss=outputs.constraint_loss
        )
        return output if return_dict else output.to_tuple()

    def _loss(self, logits, labels):
        if self.num_labels == 1:  # regression, as transformers' sequence classifiers
            require_tensor("labels", labels)
            if labels.shape[0] != logits.shape[0] or labels.dim() not in (1, 2):
                raise ValueError(f"labels must have shape (batch,) = ({logits.shape[0]},); got {tuple(labels.shape)}")
            return nn.functional.mse_loss(logits.squeeze(-1), labels.reshape(-1).to(logits.dtype))
        return nn.functional.cross_entropy(logits, check_class_labels(labels, logits.shape[0], self.num_labels))


__all__ = [
    "TwistorHopeCache",
    "TwistorHopeCausalLMOutput",
    "TwistorHopeForCausalLM",
    "TwistorHopeForSequenceClassification",
    "TwistorHopeModel",
    "TwistorHopeModelOutput",
    "TwistorHopePreTrainedModel",
]
