"""Titans-TS: a time-series forecaster around Titans' neural long-term memory in the memory-as-context (MAC) layout
("Titans: Learning to Memorize at Test Time", arXiv 2501.00663, Section 4.1), with transformers' time-series
conventions (`past_values`, `future_values`, `prediction_outputs`, as `PatchTSTForPrediction`).

Pipeline of `TitansTsForPrediction`: scale each channel of the context by its own statistics (undone on the
forecast) -> `TitansTsModel`: cut each channel into patches, embed each patch as a token (channels are independent
sequences, N = batch x channels), MAC blocks -> a flatten head per channel -> (batch, prediction_length, channels).

A MAC block splits its tokens into segments S(t) of `segment_length` and, segment after segment (Eq. 21-25):

    h_t = M*_{t-1}(q_t)                          retrieve from the memory as it was before the segment (q from S(t))
    y_t = Attn([p_1 .. p_Np] ‖ h_t ‖ S(t))       causal within the segment; persistent tokens p seen by every token
    M_t = write y_t into M_{t-1}                 (the update rule of ops_titans_ts.py, chunk by chunk)
    o_t = y_t ⊙ σ(M*_t(y_t))                     gate the attention output by the retrieval of the updated memory

Blocks without a memory attend to [p ‖ S(t)]. Attention never crosses segments: what earlier segments saw reaches
later ones (and later windows, when the state is carried) only through the memory. The memory weights and momenta are
the state (`TitansTsMemoryState`) that forward returns (`use_cache=True`) and accepts back (`memory_state=`).

Dimension letters: B batch, T time steps, C channels, N = B·C sequences, P patches, S segment tokens, D hidden size,
H memory heads, E memory head width.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import ModelOutput
from transformers.utils import logging

from .configuration_titans_ts import TitansTsConfig
from .ops_titans_ts import memory_mlp, neural_memory
from .shared_compat import GradientCheckpointingLayer, check_unused_arguments
from .shared_value_inputs import validate_series, validate_values


logger = logging.get_logger(__name__)


# ------------------------------------------------------------------------------------------------------------ state
class TitansTsMemoryState:
    """The neural memories' state: per memory block, the memory MLP's weights [(N, H, I, O)] and, with momentum, the
    momentum accumulators (one list like the weights per order); N = batch x channels, one memory per channel series.

    Returned by forward with `use_cache=True` and accepted back through `memory_state=` to carry what the memory
    learned into the next window or chunk. `detach()` cuts the graph (carry it across optimizer steps that way);
    `seen_tokens` counts the patch tokens written so far."""

    def __init__(self, layers, num_channels, batch_size, seen_tokens=0):
        self.layers = layers  # {block index: (weights, momenta or None)}
        self.num_channels = num_channels
        self.batch_size = batch_size
        self.seen_tokens = seen_tokens

    def detach(self):
        """The same state without autograd history."""
        layers = {
            index: (
                [w.detach() for w in weights],
                None if momenta is None else [[m.detach() for m in o] for o in momenta],
            )
            for index, (weights, momenta) in self.layers.items()
        }
        return TitansTsMemoryState(layers, self.num_channels, self.batch_size, self.seen_tokens)

    def __repr__(self):
        return (f"TitansTsMemoryState(blocks={sorted(self.layers)}, batch={self.batch_size}, "
                f"channels={self.num_channels}, seen_tokens={self.seen_tokens})")  # fmt: skip


@dataclass
class TitansTsModelOutput(ModelOutput):
    """last_hidden_state: (batch, num_patches, channels, hidden_size) (time-major, as the inputs); hidden_states: the
    embeddings and each block's output in that layout; memory_state: with `use_cache=True`."""

    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple | None = None
    memory_state: TitansTsMemoryState | None = None


@dataclass
class TitansTsForPredictionOutput(ModelOutput):
    """loss: with `future_values`; prediction_outputs: (batch, prediction_length, channels) in the input's scale;
    hidden_states: with `output_hidden_states`, the backbone's; loc and scale: the per-window, per-channel statistics
    (batch, 1, channels); memory_state: with `use_cache=True`. (PatchTSTForPrediction's fields.)"""

    loss: torch.FloatTensor | None = None
    prediction_outputs: torch.FloatTensor | None = None
    hidden_states: tuple | None = None
    loc: torch.FloatTensor | None = None
    scale: torch.FloatTensor | None = None
    memory_state: TitansTsMemoryState | None = None


# ---------------------------------------------------------------------------------------------------- neural memory
class TitansTsRMSNorm(nn.Module):
    def __init__(self, size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + self.eps) * self.weight


class TitansTsNeuralMemory(nn.Module):
    """Titans' neural long-term memory (Section 3.1) with H heads: from the input x_t (N, T, D)

        q_t, k_t, v_t = x_t W_Q, x_t W_K, x_t W_V           (per head, width E; q and k RMS-normalised optionally)
        θ_t = max_lr · σ(x_t w_θ)                          momentary learning rate, per token
        per chunk c of the input, from its mean (or attention-pooled) x̄_c:
        η_c = σ(x̄_c w_η)  momentum,  α_c = σ(x̄_c w_α)  forgetting,  ρ_c = σ(x̄_c W_ρ)  per-matrix lr modulation,
        γ_c = softmax(x̄_c W_γ)  mixture of momentum orders

    then the update rule and retrieval of `ops_titans_ts` (the memory MLP's initial weights are learned: what every
    sequence starts from). `forward` writes x and returns the chunk-causal retrieval, projected back to D; `retrieve`
    only reads (the h_t of MAC)."""

    def __init__(self, config):
        super().__init__()
        dim, heads, width = config.hidden_size, config.memory_num_heads, config.memory_head_dim
        self.heads, self.width = heads, width
        self.chunk_size = config.memory_chunk_size
        self.batch_size = config.memory_batch_size or config.memory_chunk_size
        self.max_lr, self.implementation = config.memory_max_lr, config.memory_implementation
        self.orders = config.memory_momentum_order if config.memory_momentum else 0
        self.spectral = config.memory_spectral_norm_surprises
        self.to_queries = nn.Linear(dim, heads * width, bias=False)
        self.to_keys = nn.Linear(dim, heads * width, bias=False)
        self.to_values = nn.Linear(dim, heads * width, bias=False)
        self.query_norm = TitansTsRMSNorm(width) if config.memory_qk_rmsnorm else None
        self.key_norm = TitansTsRMSNorm(width) if config.memory_qk_rmsnorm else None
        self.to_lr = nn.Linear(dim, heads)
        self.to_momentum = nn.Linear(dim, heads) if self.orders else None
        self.to_decay = nn.Linear(dim, heads) if config.memory_weight_decay else None
        self.to_modulation = nn.Linear(dim, heads * config.memory_depth) if config.memory_per_parameter_lr else None
        self.to_mixture = nn.Linear(dim, heads * self.orders) if self.orders > 1 else None
        # no bias: a softmax over a chunk ignores a shift of every score (the bias would never get a gradient)
        self.pool_scores = nn.Linear(dim, 1, bias=False) if config.memory_attention_pool_chunks else None
        self.out_proj = nn.Linear(heads * width, dim, bias=False)
        sizes = [width] + [width * config.memory_expansion_factor] * (config.memory_depth - 1) + [width]
        # parameters of this module itself, not of a ParameterList: transformers' init treats a module without
        # parameters of its own as initialised and would skip `reset_special_parameters`
        self.memory_depth = config.memory_depth
        for i in range(config.memory_depth):
            self.register_parameter(f"initial_weight_{i}", nn.Parameter(torch.empty(heads, sizes[i], sizes[i + 1])))
        self.reset_special_parameters()

    @property
    def initial_weights(self):
        """The memory MLP's learned initial weights [(H, I, O)], one per layer."""
        return [getattr(self, f"initial_weight_{i}") for i in range(self.memory_depth)]

    def reset_special_parameters(self):
        """The memory MLP's initial weights at the scale of nn.Linear's default (std 1/sqrt(I)), so its first surprises
        are not vanishingly small; the forgetting gate starts near 0 (bias -4: α ≈ 0.018) and the rest at σ(0)."""
        for weight in self.initial_weights:
            nn.init.normal_(weight, std=weight.shape[-2] ** -0.5)
        if self.to_decay is not None:
            nn.init.constant_(self.to_decay.bias, -4.0)

    def initial_state(self, batch, dtype, device):
        """(weights, momenta) for `batch` sequences: the learned initial weights and zero momenta."""
        weights = [w.to(dtype=dtype, device=device).expand(batch, *w.shape) for w in self.initial_weights]
        momenta = None if not self.orders else [[torch.zeros_like(w) for w in weights] for _ in range(self.orders)]
        return weights, momenta

    def _heads(self, x, projection, norm=None):  # (N, T, D) -> (N, H, T, E)
        x = projection(x).unflatten(-1, (self.heads, self.width)).transpose(1, 2)
        return x if norm is None else norm(x)

    def _merge(self, x):  # (N, H, T, E) -> (N, T, D)
        return self.out_proj(x.transpose(1, 2).flatten(-2))

    def retrieve(self, x, state):
        """M*(q_t) for every token of x with the weights of `state` (no write), outside autocast as `forward`."""
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(self.to_queries.weight.dtype)
            return self._merge(memory_mlp(state[0], self._heads(x, self.to_queries, self.query_norm)))

    def _chunk_gates(self, x, lrs):
        """Per-chunk gates from the chunk summaries x̄_c (N, C, D): each (N, H, C[, ...])."""
        n, length, dim = x.shape
        chunks = -(-length // self.chunk_size)
        pad = chunks * self.chunk_size - length
        real = F.pad(x.new_ones(n, length), (0, pad)).view(n, chunks, self.chunk_size, 1)
        grouped = F.pad(x, (0, 0, 0, pad)).view(n, chunks, self.chunk_size, dim)
        if self.pool_scores is None:
            pooled = (grouped * real).sum(2) / real.sum(2)
        else:  # attention pooling within the chunk (its padding excluded)
            scores = self.pool_scores(grouped).masked_fill(real == 0, float("-inf"))
            pooled = (scores.softmax(dim=2) * grouped).sum(2)

        def per_head(linear, *extra):  # (N, C, H·X) -> (N, H, C, X...)
            return linear(pooled).view(n, chunks, self.heads, *extra).transpose(1, 2)

        gates = {}
        if self.to_momentum is not None:
            gates["momentum"] = torch.sigmoid(per_head(self.to_momentum))
        if self.to_decay is not None:
            gates["decay"] = torch.sigmoid(per_head(self.to_decay))
        if self.to_modulation is not None:
            gates["modulation"] = torch.sigmoid(per_head(self.to_modulation, -1))
        if self.to_mixture is not None:
            gates["mixture"] = per_head(self.to_mixture, self.orders).softmax(-1)
        if self.spectral:  # the chunk's mean θ over its real tokens
            lr_chunks = F.pad(lrs, (0, pad)).view(n, self.heads, chunks, self.chunk_size)
            gates["spectral_lr"] = lr_chunks.sum(-1) / real.view(n, 1, chunks, self.chunk_size).sum(-1)
        return gates

    def forward(self, x, state):
        """Write x (N, T, D) into the memory chunk by chunk; returns (the chunk-causal retrieval M*(q_t) (N, T, D), the
        new (weights, momenta)). Under autocast the memory computes in the model's dtype (float32 in mixed precision):
        its weights accumulate many small updates, which bfloat16's 8-bit mantissa would round away."""
        with torch.autocast(x.device.type, enabled=False):
            return self._write(x.to(self.to_keys.weight.dtype), state)

    def _write(self, x, state):
        queries = self._heads(x, self.to_queries, self.query_norm)
        keys = self._heads(x, self.to_keys, self.key_norm)
        values = self._heads(x, self.to_values)
        lrs = self.max_lr * torch.sigmoid(self.to_lr(x)).transpose(1, 2)  # (N, H, T)
        gates = self._chunk_gates(x, lrs)
        weights, momenta = state
        retrieved, weights, momenta = neural_memory(queries, keys, values, lrs, weights, momenta, gates,
                                                    self.chunk_size, self.batch_size, self.implementation)  # fmt: skip
        return self._merge(retrieved), (weights, momenta)


# ------------------------------------------------------------------------------------------------------------- block
class TitansTsBatchNorm(nn.Module):
    """Batch normalisation of each hidden feature over all tokens of the batch: (N, L, D) -> (N, L, D)."""

    def __init__(self, config):
        super().__init__()
        self.norm = nn.BatchNorm1d(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x):
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


def _norm(config):
    if config.norm_type == "batchnorm":
        return TitansTsBatchNorm(config)
    return nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class TitansTsAttention(nn.Module):
    """Causal attention of a segment's tokens over [prefix ‖ segment]: the prefix (persistent tokens, and in memory
    blocks the retrieved h_t) is keys and values only. `causal_prefix`: the last this many prefix tokens are per
    position (h_t): token i sees h_j for j <= i; with `config.is_causal=False` every token sees all of them. No biases
    (a key bias would get no gradient: softmax ignores it)."""

    def __init__(self, config):
        super().__init__()
        self.heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.heads
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.dropout = config.attention_dropout
        self.is_causal = config.is_causal

    def forward(self, x, prefix, causal_prefix):
        n, length, _ = x.shape
        context = torch.cat([prefix, x], dim=1)  # (N, prefix + S, D)

        def heads(t):  # (N, L, D) -> (N, heads, L, head_dim)
            return t.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

        mask = None  # without causality every token sees the whole prefix and segment
        if self.is_causal:
            position = torch.arange(length, device=x.device)
            causal = position[None, :] <= position[:, None]  # (S, S)
            fixed = prefix.shape[1] - causal_prefix
            mask = torch.cat([causal.new_ones(length, fixed)] + ([causal] if causal_prefix else []) + [causal], dim=1)
        out = F.scaled_dot_product_attention(
            heads(self.q_proj(x)), heads(self.k_proj(context)), heads(self.v_proj(context)), attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )  # fmt: skip
        return self.o_proj(out.transpose(1, 2).flatten(-2))


class TitansTsBlock(GradientCheckpointingLayer):
    """Block over segments: x <- x + o (attention, gated by the memory in memory blocks), x <- x + FFN(x), each
    sublayer pre-norm (LayerNorm) or post-norm (`norm_type="batchnorm"`: x <- BN(x + o), PatchTST's)."""

    def __init__(self, config, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx
        self.segment_length = config.segment_length
        self.pre_norm = config.norm_type == "layernorm"
        self.attention_norm = _norm(config)
        self.attention = TitansTsAttention(config)
        self.persistent_tokens = nn.Parameter(torch.empty(config.num_persistent_memory_tokens, config.hidden_size))
        self.memory = TitansTsNeuralMemory(config) if layer_idx in config.neural_memory_layers else None
        self.ffn_norm = _norm(config)
        self.ffn_in = nn.Linear(config.hidden_size, config.intermediate_size)
        self.ffn_out = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x, memory=None):
        """x (N, P, D), memory: this block's (weights, momenta) or None -> (x, memory after the last segment)."""
        outputs = []
        for start in range(0, x.shape[1], self.segment_length):
            segment = x[:, start : start + self.segment_length]
            normed = self.attention_norm(segment) if self.pre_norm else segment
            prefix = self.persistent_tokens.expand(segment.shape[0], -1, -1)
            if self.memory is None:
                y = self.attention(normed, prefix, causal_prefix=0)
            else:
                retrieved = self.memory.retrieve(normed, memory)  # h_t from the memory before this segment
                y = self.attention(normed, torch.cat([prefix, retrieved], dim=1), causal_prefix=segment.shape[1])
                gate, memory = self.memory(y, memory)  # write y_t, read M*_t(y_t)
                y = y * torch.sigmoid(gate)
            if self.pre_norm:
                segment = segment + self.dropout(y)
                segment = segment + self.dropout(self.ffn_out(self.act(self.ffn_in(self.ffn_norm(segment)))))
            else:
                segment = self.attention_norm(segment + self.dropout(y))
                segment = self.ffn_norm(segment + self.dropout(self.ffn_out(self.act(self.ffn_in(segment)))))
            outputs.append(segment)
        return torch.cat(outputs, dim=1), memory


# ------------------------------------------------------------------------------------------------------ pre-trained
class TitansTsPreTrainedModel(PreTrainedModel):
    config_class = TitansTsConfig
    base_model_prefix = "model"
    main_input_name = "past_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["TitansTsBlock"]

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, TitansTsRMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, TitansTsBlock):
            nn.init.normal_(module.persistent_tokens, mean=0.0, std=std)
        elif isinstance(module, TitansTsModel):
            nn.init.normal_(module.segment_positions, mean=0.0, std=std)
        if isinstance(module, TitansTsNeuralMemory):  # after its Linear children (applied first, children before)
            module.reset_special_parameters()


class TitansTsModel(TitansTsPreTrainedModel):
    """The backbone: a series (batch, time, channels) of any length >= patch_length -> per-patch hidden states
    (batch, num_patches, channels, hidden_size). Patches are taken from the end (the oldest values that do not fill a
    patch are dropped, as transformers' PatchTST does); each channel is its own sequence; a learned position per
    token within its segment. No scaling here (the forecaster scales), so a long series fed in chunks that end on
    segment boundaries, with the state carried, gives the hidden states of one pass when patches do not overlap."""

    def __init__(self, config):
        super().__init__(config)
        self.patch_embedding = nn.Linear(config.patch_length, config.hidden_size)
        self.segment_positions = nn.Parameter(torch.empty(config.segment_length, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList([TitansTsBlock(config, i) for i in range(config.num_hidden_layers)])
        # post-norm blocks end normalised
        self.norm = _norm(config) if config.norm_type == "layernorm" else nn.Identity()
        self.gradient_checkpointing = False
        self.post_init()

    def initial_memory_state(self, batch_size, dtype=None, device=None):
        """A fresh state for `batch_size` series (each of the config's channels gets its own memories)."""
        dtype = dtype or self.patch_embedding.weight.dtype
        device = device or self.patch_embedding.weight.device
        n = batch_size * self.config.num_input_channels
        layers = {i: block.memory.initial_state(n, dtype, device) for i, block in enumerate(self.layers)
                  if block.memory is not None}  # fmt: skip
        return TitansTsMemoryState(layers, self.config.num_input_channels, batch_size)

    def _check_state(self, state, batch):
        if not isinstance(state, TitansTsMemoryState):
            raise ValueError(f"memory_state must be a TitansTsMemoryState (returned by forward with use_cache=True); "
                             f"got {type(state).__name__}")  # fmt: skip
        expected = {i for i, block in enumerate(self.layers) if block.memory is not None}
        if set(state.layers) != expected or state.num_channels != self.config.num_input_channels:
            raise ValueError(f"memory_state holds blocks {sorted(state.layers)} with {state.num_channels} channels; "
                             f"this model has memories in blocks {sorted(expected)} and "
                             f"{self.config.num_input_channels} channels")  # fmt: skip
        if state.batch_size != batch:
            raise ValueError(f"memory_state is for batch {state.batch_size}; past_values has batch {batch} (carry a "
                             "state only between batches of the same series)")  # fmt: skip

    def patchify(self, values):
        """(B, T, C) -> (B·C, P, patch_length): patches from the end of the series."""
        config = self.config
        length = values.shape[1]
        patches = (length - config.patch_length) // config.patch_stride + 1
        start = length - ((patches - 1) * config.patch_stride + config.patch_length)
        values = values[:, start:].transpose(1, 2).flatten(0, 1)  # (N, T')
        return values.unfold(-1, config.patch_length, config.patch_stride)

    def forward(self, past_values, memory_state=None, use_cache=None, output_hidden_states=None, return_dict=None,
                **kwargs):  # fmt: skip
        check_unused_arguments(self, kwargs, logger)
        config = self.config
        dtype = self.patch_embedding.weight.dtype
        past_values = validate_values("past_values", past_values, (("batch", None, None), ("time", None, None),
                                      ("channels", config.num_input_channels, "num_input_channels")), dtype)  # fmt: skip
        if past_values.shape[1] < config.patch_length:
            raise ValueError(f"past_values has {past_values.shape[1]} time steps, fewer than one patch "
                             f"(patch_length={config.patch_length})")  # fmt: skip
        batch = past_values.shape[0]
        if memory_state is None:
            memory_state = self.initial_memory_state(batch, dtype, past_values.device)
        else:
            self._check_state(memory_state, batch)
        tokens = self.patch_embedding(self.patchify(past_values))  # (N, P, D)
        positions = torch.arange(tokens.shape[1], device=tokens.device) % config.segment_length
        hidden = self.dropout(tokens + self.segment_positions[positions])
        layers = dict(memory_state.layers)
        all_hidden = [hidden] if output_hidden_states else None
        for index, block in enumerate(self.layers):
            hidden, layers[index] = block(hidden, layers.get(index))
            if output_hidden_states:
                all_hidden.append(hidden)
        layers = {i: state for i, state in layers.items() if state is not None}
        hidden = self.norm(hidden)

        def time_major(x):  # (N, P, D) -> (B, P, C, D)
            return x.unflatten(0, (batch, config.num_input_channels)).transpose(1, 2)

        state = None
        if use_cache:
            seen = memory_state.seen_tokens + tokens.shape[1]
            state = TitansTsMemoryState(layers, config.num_input_channels, batch, seen)
        return_dict = return_dict if return_dict is not None else config.return_dict
        output = TitansTsModelOutput(
            last_hidden_state=time_major(hidden),
            hidden_states=None if all_hidden is None else tuple(time_major(h) for h in all_hidden),
            memory_state=state,
        )
        return output if return_dict else output.to_tuple()


class TitansTsForPrediction(TitansTsPreTrainedModel):
    """Point forecasts: `past_values` (batch, context_length, channels) -> `prediction_outputs` (batch,
    prediction_length, channels); the loss (`config.loss`, MSE by default) against `future_values`. Each channel is
    scaled by its context's statistics (`config.scaling`), forecast by the backbone and a flatten head shared by the
    channels (PatchTST's), and scaled back."""

    def __init__(self, config):
        super().__init__(config)
        self.model = TitansTsModel(config)
        self.head_dropout = nn.Dropout(config.head_dropout)
        self.head = nn.Linear(config.num_patches * config.hidden_size, config.prediction_length)
        self.post_init()

    def _scale(self, values):
        """(values - loc) / scale per window and channel; loc and scale (B, 1, C)."""
        if self.config.scaling == "std":
            loc = values.mean(1, keepdim=True)
            scale = torch.sqrt(values.var(1, keepdim=True, unbiased=False) + 1e-5)
        elif self.config.scaling == "mean":
            loc = torch.zeros_like(values[:, :1])
            scale = values.abs().mean(1, keepdim=True).clamp_min(1e-10)
        else:
            loc, scale = torch.zeros_like(values[:, :1]), torch.ones_like(values[:, :1])
        return (values - loc) / scale, loc, scale

    def forward(self, past_values, future_values=None, memory_state=None, use_cache=None, output_hidden_states=None,
                return_dict=None, **kwargs):  # fmt: skip
        check_unused_arguments(self, kwargs, logger)
        config = self.config
        dtype = self.head.weight.dtype
        past_values = validate_series("past_values", past_values, config.context_length, "context_length",
                                      config.num_input_channels, dtype)  # fmt: skip
        if future_values is not None:
            future_values = validate_series("future_values", future_values, config.prediction_length,
                                            "prediction_length", config.num_input_channels, dtype,
                                            batch=past_values.shape[0])  # fmt: skip
        scaled, loc, scale = self._scale(past_values)
        outputs = self.model(scaled, memory_state=memory_state, use_cache=use_cache,
                             output_hidden_states=output_hidden_states, return_dict=True)  # fmt: skip
        hidden = outputs.last_hidden_state.transpose(1, 2).flatten(2)  # (B, C, P·D)
        forecast = self.head(self.head_dropout(hidden)).transpose(1, 2)  # (B, prediction_length, C)
        forecast = forecast * scale + loc
        loss = None
        if future_values is not None:
            loss = F.mse_loss(forecast, future_values) if config.loss == "mse" else F.l1_loss(forecast, future_values)
        output = TitansTsForPredictionOutput(
            loss=loss,
            prediction_outputs=forecast,
            hidden_states=outputs.hidden_states,
            loc=loc,
            scale=scale,
            memory_state=outputs.memory_state,
        )
        return_dict = return_dict if return_dict is not None else config.return_dict
        return output if return_dict else output.to_tuple()


__all__ = [
    "TitansTsForPrediction",
    "TitansTsMemoryState",
    "TitansTsModel",
    "TitansTsNeuralMemory",
    "TitansTsPreTrainedModel",
]
