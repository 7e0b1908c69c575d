"""Newtonian Gravity Transformer (NGT): a causal LM whose attention is a gravity kernel.

Tokens are particles. Token t has a mass m = softplus(E_m[t]) and starts at learned latent coordinates
z^0 = E_z[position]. Each block scores pairs by the squared distance of per-head projections of z and the masses
(see `ops_ngt.py` for the kernel), mixes values with those scores (there are no query/key projections), and moves
the coordinates with its attention output: z <- LayerNorm(z + W_z attn_out). A repulsion regulariser on the final
coordinates is added to the training loss.

Reference implementation: github.com/leetae9yu/newton-gravity-transformer. Deviations (all documented in
`NgtConfig`): the radius is learnable in both cutoff modes, the soft cutoff suppresses instead of raising scores
toward 0, distances come from matmuls instead of a (B, H, L, L, C) difference tensor, sequences longer than
`max_position_embeddings` raise instead of being truncated, weights are safetensors only.

Dimension letters: B batch, L new tokens, P cached tokens, H heads, C per-head coordinate size, D per-head value
size, Z latent coordinate size, E hidden size.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import ModelOutput, logging

from .configuration_ngt import NgtConfig
from .ops_ngt import gravity_attention, gravity_statistics, repulsion_energy
from .shared_cache import pop_cache, prepare_cache
from .shared_compat import CACHE_FIELD, GradientCheckpointingLayer
from .shared_token_inputs import check_labels, check_unused_arguments, select_logits_positions, validate_token_inputs


logger = logging.get_logger(__name__)


class NgtGravityAttention(nn.Module):
    r"""Gravity attention of one block.

    For head h, with per-head coordinates c_i = W_h z_i + b_h (C = `head_coord_dim`):
        s_ij = m_i m_j (beta_h -/+ gamma_h / (|c_i - c_j|^2 + eps)) + log-gate_r(|c_i - c_j|^2)   (causal)
        o_i  = W_o sum_j softmax_j(s_ij) v_j,   v_j = W_v x_j  (times m_j with `mass_in_value`)
    gamma_h = softplus(gamma_raw_h) > 0, r = softplus(radius_raw) (one radius per layer, as the original),
    beta_h = `beta` (absent with `mass_in_value`), s_self = `self_score` (only with `self_attention`).

    The cache holds, per layer, keys = [c_j, m_j] (B, H, P, C + 1) and values v_j (B, H, P, D), so decoding one
    token costs O(P) and never recomputes earlier tokens.
    """

    def __init__(
        self,
        hidden_size,
        coord_dim,
        num_heads,
        head_coord_dim,
        gravity_kernel="repulsive",
        gravity_epsilon=1e-6,
        mass_in_value=False,
        self_attention=False,
        radius_cutoff="hard",
        initial_radius=4.0,
        cutoff_sharpness=10.0,
        attention_dropout=0.1,
        implementation="chunked",
        chunk_size=128,
        recompute=True,
        layer_idx=0,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.head_coord_dim = head_coord_dim
        self.kernel = gravity_kernel
        self.eps = gravity_epsilon
        self.mass_in_value = mass_in_value
        self.cutoff = radius_cutoff
        self.initial_radius = initial_radius
        self.sharpness = cutoff_sharpness
        self.dropout = attention_dropout
        self.implementation = implementation
        self.chunk_size = chunk_size
        self.recompute = recompute
        self.layer_idx = layer_idx

        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.coord_proj = nn.Linear(coord_dim, num_heads * head_coord_dim)
        self.o_proj = nn.Linear(hidden_size, hidden_size)
        self.gamma_raw = nn.Parameter(torch.zeros(num_heads))
        # A bias added to a whole row cancels in the softmax; beta only acts multiplied by m_i m_j.
        self.beta = None if mass_in_value else nn.Parameter(torch.zeros(num_heads))
        self.radius_raw = None if radius_cutoff == "none" else nn.Parameter(torch.tensor(float(initial_radius)))
        self.self_score = nn.Parameter(torch.zeros(num_heads)) if self_attention else None

    @property
    def gamma(self):
        return F.softplus(self.gamma_raw)

    @property
    def radius(self):
        return None if self.radius_raw is None else F.softplus(self.radius_raw)

    def _kernel_kwargs(self):
        return {"kernel": self.kernel, "eps": self.eps, "cutoff": self.cutoff, "sharpness": self.sharpness}

    def _project(self, hidden_states, coords, masses):
        batch, length, _ = hidden_states.shape
        # (B, L, H*C) -> (B, L, H, C) -> (B, H, L, C)
        coords_h = self.coord_proj(coords).view(batch, length, self.num_heads, self.head_coord_dim).transpose(1, 2)
        # (B, L, E) -> (B, L, H, D) -> (B, H, L, D)
        values = self.v_proj(hidden_states).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        if self.mass_in_value:
            values = values * masses[:, None, :, None].to(values.dtype)
        return coords_h, values

    def _keys_and_values(self, coords_h, masses, values, cache):
        """Append this step's keys/values to the cache; returns all (B, H, P+L, C), (B, P+L), (B, H, P+L, D)."""
        if cache is None:
            return coords_h, masses, values
        # keys = [c, m]: the mass rides along as one extra channel so a standard DynamicCache layer can hold it
        mass_channel = masses[:, None, :, None].to(coords_h.dtype).expand(-1, self.num_heads, -1, 1)
        keys, values = cache.update(torch.cat([coords_h, mass_channel], dim=-1), values, self.layer_idx)
        return keys[..., :-1], keys[:, 0, :, -1], values

    def forward(self, hidden_states, coords, masses, key_valid=None, q_start=0, cache=None):
        """hidden_states (B, L, E), coords (B, L, Z), masses (B, L), key_valid (B, P+L) bool -> (B, L, E)."""
        batch, length, _ = hidden_states.shape
        coords_h, values = self._project(hidden_states, coords, masses)
        coords_k, masses_k, values_k = self._keys_and_values(coords_h, masses, values, cache)
        use_masses = not self.mass_in_value
        out = gravity_attention(
            coords_h, coords_k, masses if use_masses else None, masses_k if use_masses else None, values_k,
            self.gamma, self.beta, self.radius, self.self_score, key_valid, q_start,
            implementation=self.implementation, chunk_size=self.chunk_size, recompute=self.recompute,
            dropout_p=self.dropout, training=self.training, **self._kernel_kwargs(),
        )  # fmt: skip
        # (B, H, L, D) -> (B, L, H*D)
        out = out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)
        return self.o_proj(out)

    @torch.no_grad()
    def statistics(self, hidden_states, coords, masses, key_valid=None):
        """Diagnostics of this layer for a full (uncached) sequence; see `ops_ngt.gravity_statistics`."""
        coords_h, _ = self._project(hidden_states, coords, masses)
        use_masses = not self.mass_in_value
        stats = gravity_statistics(
            coords_h, coords_h, masses if use_masses else None, masses if use_masses else None,
            self.gamma, self.beta, self.radius, self.self_score, key_valid, 0, **self._kernel_kwargs(),
        )  # fmt: skip
        stats["gamma"] = self.gamma.mean()
        stats["radius"] = self.radius if self.radius is not None else torch.tensor(float("inf"))
        return stats


class NgtParticleEmbedding(nn.Module):
    """Token masses m = softplus(mass_weight[token]) (B, L) and input coordinates z^0 = coord_weight[position] (B, L, Z).

    Both tables start at unit scale, as the original's `nn.Embedding` default.
    """

    def __init__(self, vocab_size, max_positions, coord_dim):
        super().__init__()
        self.mass_weight = nn.Parameter(torch.empty(vocab_size, 1))
        self.coord_weight = nn.Parameter(torch.empty(max_positions, coord_dim))

    def forward(self, input_ids, position_ids):
        masses = F.softplus(F.embedding(input_ids, self.mass_weight)).squeeze(-1)
        return masses, F.embedding(position_ids, self.coord_weight)


class NgtMLP(nn.Module):
    """Position-wise feed-forward: Linear -> act -> dropout -> Linear -> dropout (as the original)."""

    def __init__(self, hidden_size, intermediate_size, hidden_act="gelu", dropout=0.0):
        super().__init__()
        self.fc_in = nn.Linear(hidden_size, intermediate_size)
        self.act = ACT2FN[hidden_act]
        self.fc_out = nn.Linear(intermediate_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states):
        return self.dropout(self.fc_out(self.dropout(self.act(self.fc_in(hidden_states)))))


class NgtBlock(GradientCheckpointingLayer):
    """Pre-LayerNorm block: h += Attn(LN(h)); h += MLP(LN(h)); z <- LN_z(z + W_z Attn(LN(h))).

    The last block updates the coordinates only when the repulsion regulariser reads them; otherwise that update
    would be a dead branch (parameters that never receive a gradient).
    """

    def __init__(self, config, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = NgtGravityAttention(
            config.hidden_size,
            config.coord_dim,
            config.num_attention_heads,
            config.head_coord_dim,
            gravity_kernel=config.gravity_kernel,
            gravity_epsilon=config.gravity_epsilon,
            mass_in_value=config.mass_in_value,
            self_attention=config.self_attention,
            radius_cutoff=config.radius_cutoff,
            initial_radius=config.initial_radius,
            cutoff_sharpness=config.cutoff_sharpness,
            attention_dropout=config.attention_dropout,
            implementation=config.gravity_implementation,
            chunk_size=config.gravity_chunk_size,
            recompute=config.gravity_recompute,
            layer_idx=layer_idx,
        )
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = NgtMLP(config.hidden_size, config.intermediate_size, config.hidden_act, config.hidden_dropout)
        self.updates_coordinates = layer_idx < config.num_hidden_layers - 1 or config.repulsion_weight > 0
        if self.updates_coordinates:
            self.coord_update = nn.Linear(config.hidden_size, config.coord_dim)
            self.coord_norm = nn.LayerNorm(config.coord_dim, eps=config.layer_norm_eps)

    def forward(self, hidden_states, coords, masses, key_valid=None, q_start=0, cache=None):
        attn_out = self.attn(self.ln_1(hidden_states), coords, masses, key_valid, q_start, cache)
        hidden_states = hidden_states + attn_out
        hidden_states = hidden_states + self.mlp(self.ln_2(hidden_states))
        if self.updates_coordinates:
            coords = self.coord_norm(coords + self.coord_update(attn_out))
        return hidden_states, coords


class NgtPreTrainedModel(PreTrainedModel):
    config_class = NgtConfig
    config: NgtConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["NgtBlock"]

    @torch.no_grad()
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
        # Modules are visited after their children, so the entries below override the generic ones above.
        elif isinstance(module, NgtParticleEmbedding):
            nn.init.normal_(module.mass_weight, mean=0.0, std=1.0)
            nn.init.normal_(module.coord_weight, mean=0.0, std=1.0)
        if isinstance(module, NgtGravityAttention):
            # PyTorch's default Linear scale (as the original): initial distances then sit inside the radius.
            nn.init.normal_(module.coord_proj.weight, mean=0.0, std=1.0 / math.sqrt(3 * module.coord_proj.in_features))
            nn.init.zeros_(module.gamma_raw)  # gamma = softplus(0) = log 2
            if module.beta is not None:
                nn.init.zeros_(module.beta)
            if module.radius_raw is not None:
                nn.init.constant_(module.radius_raw, float(module.initial_radius))
            if module.self_score is not None:
                nn.init.zeros_(module.self_score)


@dataclass
class NgtModelOutput(ModelOutput):
    """Output of `NgtModel`.

    Args:
        last_hidden_state: (B, L, E) final hidden states (after the final LayerNorm).
        cache: the cache to pass back for the next tokens (`use_cache=True`).
        hidden_states: tuple of (B, L, E), the embeddings and each block's output (`output_hidden_states=True`).
        coordinates: (B, L, Z) final-layer latent coordinates z.
        masses: (B, L) token masses m.
    """

    last_hidden_state: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    coordinates: torch.FloatTensor | None = None
    masses: torch.FloatTensor | None = None


@dataclass
class NgtCausalLMOutputWithPast(CausalLMOutputWithPast):
    """`CausalLMOutputWithPast` plus the two parts of the loss.

    `loss` = `lm_loss` + repulsion_weight * `repulsion_loss` in training; in eval mode the regulariser is not
    computed and `loss` is the LM loss (so eval loss and perplexity stay comparable).
    """

    lm_loss: torch.FloatTensor | None = None
    repulsion_loss: torch.FloatTensor | None = None


class NgtModel(NgtPreTrainedModel):
    """NGT backbone: token embedding, masses, coordinates, gravity blocks and the final LayerNorm."""

    def __init__(self, config: NgtConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.particles = NgtParticleEmbedding(config.vocab_size, config.max_position_embeddings, config.coord_dim)
        self.layers = nn.ModuleList([NgtBlock(config, i) for i in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def _validate(self, input_ids, attention_mask, position_ids, past_length):
        """(input_ids, attention_mask or None when it masks nothing, position_ids (B, L)), checked."""
        config = self.config
        return validate_token_inputs(
            config.vocab_size, config.max_position_embeddings, input_ids, attention_mask, position_ids, past_length
        )

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
        cache = pop_cache(cache, kwargs)
        if inputs_embeds is not None:
            raise ValueError("NGT needs input_ids (token masses are looked up by id); inputs_embeds is not supported")
        if input_ids is None:
            raise ValueError("input_ids is required")
        if kwargs.get("output_attentions"):
            raise ValueError("output_attentions is not supported by NGT; use NgtForCausalLM.gravity_diagnostics()")
        check_unused_arguments(self, kwargs, logger)
        # A training forward builds no cache unless asked to (it would only cost memory).
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if self.gradient_checkpointing and self.training and use_cache:
            use_cache = False
        cache = prepare_cache(cache, use_cache, self.config)
        past_length = cache.get_seq_length() if cache is not None else 0
        input_ids, attention_mask, position_ids = self._validate(input_ids, attention_mask, position_ids, past_length)

        hidden_states = self.embed_tokens(input_ids)  # (B, L, E)
        masses, coords = self.particles(input_ids, position_ids)  # (B, L), (B, L, Z)
        key_valid = None if attention_mask is None else attention_mask.bool()  # None: the mask hides nothing

        all_hidden = (hidden_states,) if output_hidden_states else None
        for block in self.layers:
            hidden_states, coords = block(
                hidden_states,
                coords,
                masses,
                key_valid=key_valid,
                q_start=past_length,
                cache=cache if use_cache else None,
            )
            if output_hidden_states:
                all_hidden += (hidden_states,)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden = all_hidden[:-1] + (hidden_states,)
        output = NgtModelOutput(
            last_hidden_state=hidden_states,
            cache=cache if use_cache else None,
            hidden_states=all_hidden,
            coordinates=coords,
            masses=masses,
        )
        return output if return_dict else output.to_tuple()


class NgtForCausalLM(NgtPreTrainedModel, GenerationMixin):
    """NGT with a language-modeling head tied to the token embedding; the loss includes the repulsion term."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: NgtConfig):
        super().__init__(config)
        self.model = NgtModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self._training_forwards = 0  # counts training forwards with labels, for repulsion_interval
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

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

        `logits_to_keep`: if an int n > 0, only the logits of the last n positions are computed (generation).
        """
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

        loss = lm_loss = repulsion = None
        if labels is not None:
            lm_loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, num_items_in_batch=num_items_in_batch
            )
            loss = lm_loss
            if self.training and self.config.repulsion_weight > 0:
                self._training_forwards += 1
                if (self._training_forwards - 1) % self.config.repulsion_interval == 0:
                    repulsion = repulsion_energy(
                        outputs.coordinates,
                        outputs.masses,
                        None if attention_mask is None else attention_mask.bool(),
                        num_samples=self.config.repulsion_num_samples,
                        min_dist=self.config.repulsion_min_dist,
                    )
                    loss = lm_loss + self.config.repulsion_weight * repulsion.to(lm_loss.dtype)

        output = NgtCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            lm_loss=lm_loss,
            repulsion_loss=repulsion,
            **{CACHE_FIELD: outputs.cache},
        )
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def gravity_diagnostics(self, input_ids, attention_mask=None):
        """Per-layer and mean diagnostics for logging: gamma (mean over heads), radius, mean pair distance,
        attention entropy (nats) and sparsity (fraction of attended pairs outside the radius).

        Returns a dict of Python floats: `layer_{i}/{name}` and `mean/{name}`.
        """
        model = self.model
        input_ids, attention_mask, position_ids = model._validate(input_ids, attention_mask, None, 0)
        key_valid = None if attention_mask is None else attention_mask.bool()
        hidden_states = model.embed_tokens(input_ids)
        masses, coords = model.particles(input_ids, position_ids)
        results, per_name = {}, {}
        for i, block in enumerate(model.layers):
            stats = block.attn.statistics(block.ln_1(hidden_states), coords, masses, key_valid)
            for name, value in stats.items():
                results[f"layer_{i}/{name}"] = float(value)
                per_name.setdefault(name, []).append(float(value))
            hidden_states, coords = block(hidden_states, coords, masses, key_valid=key_valid)
        for name, values in per_name.items():
            results[f"mean/{name}"] = sum(values) / len(values)
        return results


__all__ = [
    "NgtBlock",
    "NgtCausalLMOutputWithPast",
    "NgtForCausalLM",
    "NgtGravityAttention",
    "NgtModel",
    "NgtModelOutput",
    "NgtParticleEmbedding",
    "NgtPreTrainedModel",
]
