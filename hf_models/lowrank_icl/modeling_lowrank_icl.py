"""LowRank ICL: a GPT-2 style transformer that reads a prompt of feature vectors, with low-rank positional embeddings
and layer-specific sparse attention masks, classifying the prompt from its last position (the table-connectivity
task). After "What Can Transformers Learn In-Context?" (Garg et al., arXiv 2208.01066) and the fork
`sheepfriend/in-context-learning` (`LowRankTransformerModel`).

The prompt (L = V·(C+1) + 3 rows): V table blocks of C+1 rows each (a table token, then its C column tokens), a
separator and the 2-column query. Dimension letters: B batch, L prompt length, V tables, C columns per table
(a block is K = C+1 rows), H heads, D head width, h hidden size, S = V+3 tokens of the sparse layers.

Attention per layer (`attention_pattern="table"`):
- local layers (the first `num_local_layers`): row i sees row j iff both are in the same table block; each of the
  final 3 rows sees only itself;
- sparse layers (the rest): row i sees row j iff both are "summary" rows: the last row of a table block or one of
  the final 3 rows. Other rows have no key; their attention output is 0 (the original's -1e9 additive mask made them
  attend near-uniformly instead; they never reach the query row, whose output is the same either way).
Every mask is combined with causality when `is_causal` (j <= i), built here explicitly (the original relied on
GPT-2's internal causal buffer in transformers 4.17).
"""

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput
from transformers.utils import logging

from .configuration_lowrank_icl import LowRankIclConfig
from .shared_compat import GradientCheckpointingLayer, check_unused_arguments
from .shared_value_inputs import validate_features


logger = logging.get_logger(__name__)


def summary_positions(num_tables, num_columns, device=None):
    """The S = V+3 rows the sparse layers connect: the last row of each table block, then the final 3 rows."""
    block = num_columns + 1
    blocks = torch.arange(num_tables, device=device) * block + num_columns
    tail = torch.arange(3, device=device) + num_tables * block
    return torch.cat([blocks, tail])


def table_attention_mask(num_tables, num_columns, kind, is_causal, device=None):
    """The boolean (L, L) mask of one layer (True: row i may attend to column j).

    `kind`: `"local"` (same table block; each final row only itself), `"sparse"` (among the summary rows) or `"full"`.
    """
    block = num_columns + 1
    length = num_tables * block + 3
    position = torch.arange(length, device=device)
    if kind == "full":
        mask = torch.ones(length, length, dtype=torch.bool, device=device)
    elif kind == "local":
        # block id per row; the final 3 rows get ids of their own, so they see only themselves
        block_id = torch.where(
            position < num_tables * block, position // block, position - num_tables * block + num_tables
        )
        mask = block_id[:, None] == block_id[None, :]
    elif kind == "sparse":
        summary = torch.zeros(length, dtype=torch.bool, device=device)
        summary[summary_positions(num_tables, num_columns, device)] = True
        mask = summary[:, None] & summary[None, :]
    else:
        raise ValueError(f"unknown attention kind {kind!r}: must be 'local', 'sparse' or 'full'")
    if is_causal:
        mask = mask & (position[None, :] <= position[:, None])
    return mask


def naive_masked_attention(query, key, value, mask, dropout=0.0, training=False):
    """softmax(q·kᵀ/√D + mask)·v over the dense (L, L) scores; a row with no allowed key outputs 0.

    query/key/value (B, H, L, D), mask (L, L) bool -> (B, H, L, D). The reference of the sparse paths.
    """
    scores = query @ key.transpose(-1, -2) / query.shape[-1] ** 0.5  # (B, H, L, L)
    scores = scores.masked_fill(~mask, float("-inf"))
    has_key = mask.any(-1, keepdim=True)  # (L, 1)
    probs = torch.softmax(scores.masked_fill(~has_key, 0.0), dim=-1).masked_fill(~has_key, 0.0)
    probs = F.dropout(probs, p=dropout, training=training)
    return probs @ value


def local_table_attention(query, key, value, num_tables, num_columns, is_causal, dropout=0.0):
    """The local layers' attention as batched attention over the (V, K) table blocks: O(L·K) scores, no L×L matrix.
    The final 3 rows see only themselves, so their output is their own value. (B, H, L, D) -> (B, H, L, D)."""
    batch, heads, length, width = query.shape
    block = num_columns + 1
    cut = num_tables * block

    def blocks(x):
        return x[:, :, :cut].reshape(batch, heads * num_tables, block, width)  # (B, H·V, K, D)

    inside = F.scaled_dot_product_attention(blocks(query), blocks(key), blocks(value), dropout_p=dropout,
                                            is_causal=is_causal)  # fmt: skip
    return torch.cat([inside.reshape(batch, heads, cut, width), value[:, :, cut:]], dim=2)


def sparse_table_attention(query, key, value, num_tables, num_columns, is_causal, dropout=0.0):
    """The sparse layers' attention over the gathered S = V+3 summary rows (kept in order, so causal among them is
    causal in the prompt); every other row outputs 0. (B, H, L, D) -> (B, H, L, D)."""
    index = summary_positions(num_tables, num_columns, query.device)
    attended = F.scaled_dot_product_attention(query[:, :, index], key[:, :, index], value[:, :, index],
                                              dropout_p=dropout, is_causal=is_causal)  # (B, H, S, D)  # fmt: skip
    return torch.zeros_like(query).index_copy(2, index, attended)


class LowRankIclPositionEmbedding(nn.Module):
    """Positional embeddings P (L, h), added to the read-in features.

    low_rank: P = [P_shared; P_shared; ...; P_shared (V times); P_last3], P_shared (C+1, h), P_last3 (3, h):
    (C+4)·h parameters, defined for any V. dense: P = table[:L] of a (max_position_embeddings, h) table, for the
    configured V only (the baseline).
    """

    def __init__(self, config):
        super().__init__()
        self.kind = config.position_embedding_type
        self.num_tables = config.num_tables
        self.length = config.prompt_length()
        if self.kind == "low_rank":
            self.shared = nn.Parameter(torch.empty(config.num_columns + 1, config.hidden_size))
            self.last = nn.Parameter(torch.empty(3, config.hidden_size))
        else:
            self.table = nn.Parameter(torch.empty(config.max_position_embeddings, config.hidden_size))

    def forward(self, num_tables):
        if self.kind == "low_rank":
            return torch.cat([self.shared.repeat(num_tables, 1), self.last])  # (V·(C+1) + 3, h)
        if num_tables != self.num_tables:
            raise ValueError(
                f"num_tables={num_tables}: the dense positional table is defined for num_tables={self.num_tables} "
                "only (the low-rank positions, position_embedding_type='low_rank', serve any number of tables)"
            )
        return self.table[: self.length]


class LowRankIclAttention(nn.Module):
    """Multi-head self-attention under the layer's mask (module docstring): `kind` is `"local"`, `"sparse"` or
    `"full"`; `implementation` `"sparse"` runs the table masks without an L×L matrix, `"masked"` through
    `naive_masked_attention` (the reference). GPT-2 layout: one (h, 3h) projection for q, k, v, then (h, h)."""

    def __init__(self, config, kind):
        super().__init__()
        self.kind = kind
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.num_columns = config.num_columns
        self.is_causal = config.is_causal
        self.implementation = config.table_attention_implementation
        self.attention_dropout = config.attention_dropout
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states, num_tables):
        batch, length, _ = hidden_states.shape
        qkv = self.qkv_proj(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, D)
        dropout = self.attention_dropout if self.training else 0.0
        if self.kind == "full" and self.implementation == "sparse":
            attended = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, is_causal=self.is_causal)
        elif self.implementation == "masked":
            mask = table_attention_mask(num_tables, self.num_columns, self.kind, self.is_causal, query.device)
            attended = naive_masked_attention(query, key, value, mask, dropout, self.training)
        elif self.kind == "local":
            attended = local_table_attention(query, key, value, num_tables, self.num_columns, self.is_causal, dropout)
        else:
            attended = sparse_table_attention(query, key, value, num_tables, self.num_columns, self.is_causal, dropout)
        attended = attended.transpose(1, 2).reshape(batch, length, -1)  # (B, L, h)
        return self.out_proj(attended)


class LowRankIclMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states):
        return self.down_proj(self.act(self.up_proj(hidden_states)))


def attention_kind(config, layer_idx):
    """The mask of block `layer_idx`: local, then sparse (`attention_pattern="table"`), or full everywhere."""
    if config.attention_pattern == "full":
        return "full"
    return "local" if layer_idx < config.num_local_layers else "sparse"


class LowRankIclBlock(GradientCheckpointingLayer):
    """Pre-norm GPT-2 block: x + Attn(LN(x)), then x + MLP(LN(x)), with residual dropout."""

    def __init__(self, config, layer_idx):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = LowRankIclAttention(config, attention_kind(config, layer_idx))
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = LowRankIclMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden_states, num_tables):
        hidden_states = hidden_states + self.dropout(self.attention(self.input_layernorm(hidden_states), num_tables))
        return hidden_states + self.dropout(self.mlp(self.post_attention_layernorm(hidden_states)))


class LowRankIclPreTrainedModel(PreTrainedModel):
    config_class = LowRankIclConfig
    base_model_prefix = "model"
    main_input_name = "input_features"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LowRankIclBlock"]

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, LowRankIclPositionEmbedding):
            for parameter in module.parameters(recurse=False):
                nn.init.normal_(parameter, mean=0.0, std=self.config.position_initializer_range)


def _check_num_tables(num_tables, config):
    """`num_tables` as an int: None gives the config's V; an int or a tensor of one repeated value (a processor's
    batch) is accepted."""
    if num_tables is None:
        return config.num_tables
    if isinstance(num_tables, torch.Tensor):
        if (
            num_tables.numel() == 0
            or num_tables.is_floating_point()
            or bool((num_tables != num_tables.flatten()[0]).any())
        ):
            raise ValueError(f"num_tables must be one integer for the whole batch (prompts of one length); got "
                             f"{num_tables.tolist()}")  # fmt: skip
        num_tables = int(num_tables.flatten()[0])
    if isinstance(num_tables, bool) or not isinstance(num_tables, int) or num_tables < 1:
        raise ValueError(f"num_tables must be an integer >= 1; got {num_tables!r}")
    return num_tables


class LowRankIclModel(LowRankIclPreTrainedModel):
    """The backbone: read-in Linear(n_dims -> h) + positions, the blocks, a final LayerNorm. Returns the hidden
    states of every prompt row (B, L, h)."""

    def __init__(self, config):
        super().__init__(config)
        self.read_in = nn.Linear(config.n_dims, config.hidden_size)
        self.position_embeddings = LowRankIclPositionEmbedding(config)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(LowRankIclBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(self, input_features, num_tables=None, output_hidden_states=None, return_dict=None, **kwargs):
        """input_features (B, L, n_dims) with L = num_tables·(C+1) + 3 (`num_tables` defaults to the config's V)."""
        check_unused_arguments(self, kwargs, logger)
        config = self.config
        num_tables = _check_num_tables(num_tables, config)
        length = config.prompt_length(num_tables)
        input_features = validate_features(
            input_features, config.n_dims, self.read_in.weight.dtype, length=length,
            length_field=f"num_tables·(num_columns+1)+3 with num_tables={num_tables}, num_columns={config.num_columns}",
        )  # fmt: skip
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else config.return_dict
        positions = self.position_embeddings(num_tables)  # (L, h)
        hidden_states = self.dropout(self.read_in(input_features) + positions)  # (B, L, h)
        all_hidden = (hidden_states,) if output_hidden_states else None
        for layer in self.layers:
            hidden_states = layer(hidden_states, num_tables)
            if output_hidden_states:
                all_hidden += (hidden_states,)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden = all_hidden[:-1] + (hidden_states,)
        if not return_dict:
            return tuple(v for v in (hidden_states, all_hidden) if v is not None)
        return BaseModelOutput(last_hidden_state=hidden_states, hidden_states=all_hidden)


def check_connectivity_labels(labels, batch, device):
    """Labels y in {-1, +1} per prompt (+1: the query's columns are connected), shape (batch,)."""
    if not isinstance(labels, torch.Tensor):
        raise ValueError(
            f"labels must be a torch.Tensor of shape (batch,) with values -1 or +1; got {type(labels).__name__}"
        )
    if labels.dim() != 1 or labels.shape[0] != batch:
        raise ValueError(f"labels must have shape (batch={batch},); got {tuple(labels.shape)}")
    if labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be -1 or +1 (a real tensor); got dtype {labels.dtype}")
    if labels.device != device:
        raise ValueError(f"labels are on {labels.device} but the model on {device}; move them to the model")
    bad = (labels != 1) & (labels != -1)
    if bool(bad.any()):
        raise ValueError(f"labels must be -1 (not connected) or +1 (connected); got {labels[bad][:5].tolist()}")


class LowRankIclForPromptClassification(LowRankIclPreTrainedModel):
    """The backbone and a read-out Linear(h -> 1) at the last prompt row (the query's second column): one logit per
    prompt, > 0 meaning connected (y = +1). Loss: binary cross-entropy with logits on (y + 1) / 2.

    Loaded with `AutoModelForSequenceClassification` (a sequence in, one label out); named for prompts of feature
    vectors because it does not take the token ids that sequence classifiers (and their pipelines) read.
    """

    def __init__(self, config):
        super().__init__(config)
        self.model = LowRankIclModel(config)
        self.read_out = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, input_features, num_tables=None, labels=None, output_hidden_states=None, return_dict=None,
                **kwargs):  # fmt: skip
        """input_features (B, L, n_dims); labels (B,) in {-1, +1}. Returns `logits` (B, 1)."""
        check_unused_arguments(self, kwargs, logger)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(input_features, num_tables=num_tables, output_hidden_states=output_hidden_states,
                             return_dict=True)  # fmt: skip
        # read_out(h) as a product and a sum rather than a (h -> 1) matmul: a matrix-vector product's summation order
        # follows the weight's memory alignment, which differs after from_pretrained (safetensors offsets), and the
        # logits would change in the last bit on reload
        last = outputs.last_hidden_state[:, -1]  # (B, h)
        logits = (last[:, None, :] * self.read_out.weight).sum(-1) + self.read_out.bias  # (B, 1)
        loss = None
        if labels is not None:
            check_connectivity_labels(labels, logits.shape[0], logits.device)
            targets = (labels.to(logits.dtype) + 1) / 2
            loss = F.binary_cross_entropy_with_logits(logits[:, 0].float(), targets.float())
        if not return_dict:
            output = (logits,) + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
            return ((loss,) + output) if loss is not None else output
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


__all__ = [
    "LowRankIclForPromptClassification",
    "LowRankIclModel",
    "LowRankIclPreTrainedModel",
    "local_table_attention",
    "naive_masked_attention",
    "sparse_table_attention",
    "table_attention_mask",
]
