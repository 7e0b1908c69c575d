"""mHC transformers: Manifold-Constrained Hyper-Connections (arXiv 2512.24880) in a causal LM, a text encoder and an
image classifier.

The residual stream is widened into n streams x (n x C). Around every attention and feed-forward layer F, a hyper-
connection computes coefficients from the streams (see `ops_mhc.py` for the equations) and updates them as
    h = sum_i H_pre[i] x_i,        x'_i = sum_j H_res[i, j] x_j + H_post[i] F(RMSNorm(h))
The streams start as n copies of the embedding and are averaged before the final RMSNorm (the original's readout).
With `expansion_rate=1` the block is exactly the plain pre-norm residual x + F(RMSNorm(x)).

Original project: the `HyperConnectionDecodeTransformer`, `HyperConnectionTransformer` and
`ImageHyperConnectionTransformer` of an mHC reference implementation (fixed sinusoidal positions, RMSNorm, GELU
feed-forward). Deviations, all documented in `MhcConfig`: `mask_ratio` is honoured (the original always dropped 10%
of the patches), drop path drops the layer output instead of the whole stream state, the causal LM has a KV cache,
and the static hyper-connection biases start close to an identity residual.

Dimension letters: B batch, T tokens (new), P cached tokens, n streams, C width, H heads, D head size.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast, ImageClassifierOutput
from transformers.utils import ModelOutput, logging

from .configuration_mhc import MhcConfig
from .kernels_mhc import MAX_STREAMS as CPU_KERNELS_MAX_STREAMS
from .kernels_mhc import disabled_by as cpu_kernels_disabled_by
from .kernels_mhc import load as load_cpu_kernels
from .kernels_mhc import load_error as cpu_kernels_error
from .ops_mhc import (
    collapse,
    compiled,
    composite_gain,
    drop_path,
    expand,
    fused_mhc_read,
    fused_mhc_write,
    hc_coefficients,
    masked_average_pool,
    mhc_coefficients,
    mhc_read,
    mhc_write,
    sinusoidal_code,
)
from .shared_cache import pop_cache, prepare_cache
from .shared_compat import CACHE_FIELD, GradientCheckpointingLayer, is_compiling
from .shared_token_inputs import (
    check_class_labels,
    check_labels,
    check_unused_arguments,
    require_tensor,
    select_logits_positions,
    validate_token_inputs,
)


logger = logging.get_logger(__name__)


class MhcRMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight, computed in float32."""

    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class MhcHyperConnection(nn.Module):
    r"""One hyper-connection: turns the streams (B, T, n, C) into the input h (B, T, C) of its layer, then adds the
    layer output back.

    mHC (`kind="mhc"`), with x' = RMSNorm(vec(x)) and one fused projection `phi` (K = 2n + n^2 rows):
        H~ = alpha * (x' phi) + b   (alpha = `gate` = [alpha_pre, alpha_post, alpha_res], b = `bias`)
        H_pre = sigmoid(H~_pre), H_post = 2 sigmoid(H~_post), H_res = Sinkhorn-Knopp(exp(H~_res), t_max)
    HC (`kind="hc"`): per-stream RMSNorm, `phi` (2 + n rows) through tanh, H = b + alpha * tanh(.), unconstrained.
    With n = 1 there are no coefficients: h = x and x' = x + F(h), the plain residual.

    Static biases at init (see `MhcConfig.residual_diagonal_init`): mHC b_pre = -log(n - 1) (H_pre = 1/n),
    b_post = 0 (H_post = 1), b_res = d I; HC b_pre = one-hot on stream `index mod n`, b_post = 1, b_res = I.
    """

    def __init__(
        self,
        hidden_size,
        expansion_rate,
        index,
        kind="mhc",
        dynamic=True,
        sinkhorn_iterations=20,
        gate_init=0.01,
        residual_diagonal_init=4.0,
        eps=1e-6,
        implementation="auto",
    ):
        super().__init__()
        self.n, self.index, self.kind, self.dynamic = expansion_rate, index, kind, dynamic
        self.implementation = implementation
        self.sinkhorn_iterations, self.gate_init, self.residual_diagonal_init = (
            sinkhorn_iterations,
            gate_init,
            residual_diagonal_init,
        )
        self.eps = eps
        n = expansion_rate
        if n == 1:
            self.phi = self.bias = self.gate = None
            return
        inputs, outputs = (n * hidden_size, 2 * n + n * n) if kind == "mhc" else (hidden_size, 2 + n)
        self.phi = nn.Parameter(torch.empty(outputs, inputs)) if dynamic else None
        self.gate = nn.Parameter(torch.empty(3)) if dynamic else None
        self.bias = nn.Parameter(torch.empty(2 * n + n * n))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, std=0.02):
        if self.n == 1:
            return
        n = self.n
        if self.dynamic:
            nn.init.normal_(self.phi, mean=0.0, std=std)
            nn.init.constant_(self.gate, self.gate_init)
        eye = torch.eye(n)
        if self.kind == "mhc":
            pre = torch.full((n,), -math.log(n - 1))
            post = torch.zeros(n)
            res = self.residual_diagonal_init * eye
        else:
            pre = torch.zeros(n)
            pre[self.index % n] = 1.0
            post = torch.ones(n)
            res = eye
        self.bias.copy_(torch.cat([pre, post, res.flatten()]))

    def coefficients(self, streams):
        """H_pre (B, T, n), H_post (B, T, n), H_res (B, T, n, n) for streams (B, T, n, C), in float32."""
        if self.kind == "mhc":
            return mhc_coefficients(
                streams, self.phi, self.bias, self.gate, self.sinkhorn_iterations, self.eps, self.dynamic
            )
        return hc_coefficients(streams, self.phi, self.bias, self.gate, self.eps, self.dynamic)

    def _path(self, streams):
        """Which implementation runs this call (`MhcConfig.hyper_connection_implementation`): "fused" (the C++ CPU
        kernels), "compile" or "eager". Only mHC with dynamic coefficients has the fast paths, and only in training
        (evaluation and generation stay eager, so loading a model never builds or compiles anything)."""
        if self.kind != "mhc" or not self.dynamic or not (self.training and torch.is_grad_enabled()):
            return "eager"
        if self.implementation == "compile":
            return "compile"
        if (
            self.implementation == "auto"
            and self.n <= CPU_KERNELS_MAX_STREAMS
            and streams.device.type == "cpu"
            and streams.dtype in (torch.float32, torch.float64)
            and cpu_kernels() is not None
        ):
            return "fused"
        return "eager"

    def forward(self, streams):
        """Streams (B, T, n, C) -> the layer input h (B, T, C) and the state `add_output` needs."""
        if self.n == 1:
            return streams[..., 0, :], ("eager", streams, None, None, None)
        path = self._path(streams)
        args = (self.phi, self.bias, self.gate, self.sinkhorn_iterations, self.eps)
        link = None
        if path == "fused":  # the two halves share their backward through `link`
            h, post, res, link = fused_mhc_read(streams, *args, cpu_kernels())
        elif path == "compile":
            h, post, res = compiled(mhc_read)(streams, *args)
        else:
            pre, post, res = self.coefficients(streams)
            h = collapse(streams, pre)
        return h, (path, streams, post, res, link)

    def add_output(self, state, output):
        """x'_i = sum_j H_res[i, j] x_j + H_post[i] F(h): `state` from `forward`, the layer output F(h) (B, T, C)."""
        path, streams, post, res, link = state
        if post is None:  # n = 1: the plain residual
            return streams + output.unsqueeze(-2)
        if path == "fused":
            return fused_mhc_write(streams, res, post, output, cpu_kernels(), link)
        if path == "compile":
            return compiled(mhc_write)(streams, res, post, output)
        return expand(streams, res, post, output)


def cpu_kernels():
    """The fused CPU kernels (`kernels_mhc.load()`, built on the first call in a process), or None, with a warning
    the first time, when they are switched off or cannot be built."""
    kernels = load_cpu_kernels()
    if kernels is None and cpu_kernels_disabled_by():
        logger.warning_once(
            f"mHC: {cpu_kernels_disabled_by()} switches the fused CPU kernels off, the hyper-connections run on "
            "PyTorch ops (hyper_connection_implementation='auto')"
        )
    elif kernels is None:
        logger.warning_once(
            "mHC: the fused CPU kernels could not be built, the hyper-connections run on PyTorch ops "
            f"(hyper_connection_implementation='auto'): {cpu_kernels_error()} (kernels_mhc.load_error(full=True) "
            "has the whole message; hyper_connection_implementation='eager' silences this)"
        )
    return kernels


def eager_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False):
    """softmax(q k^T / sqrt(d) + mask) v written out, with `F.scaled_dot_product_attention`'s arguments and meaning:
    a boolean `attn_mask` keeps True, a float one is added; `is_causal` lets query i see keys 0..i (top-left
    aligned). Shapes: (B, H, T, D) queries, (B, H, S, D) keys and values -> (B, H, T, D)."""
    scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])  # (B, H, T, S)
    if is_causal:
        keep = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    weights = F.dropout(scores.softmax(-1), p=dropout_p) if dropout_p > 0 else scores.softmax(-1)
    return weights @ value


class MhcAttention(nn.Module):
    """Multi-head self-attention (scaled dot product) with an optional key/value cache. `attn_implementation`
    (the config's, as transformers sets it): "sdpa" (the default) runs `F.scaled_dot_product_attention`, "eager"
    the same math written out (`eager_attention`, e.g. to read or patch the weights)."""

    def __init__(self, hidden_size, num_heads, layer_idx, dropout=0.0):
        super().__init__()
        self.num_heads, self.head_dim, self.layer_idx, self.dropout = (
            num_heads,
            hidden_size // num_heads,
            layer_idx,
            dropout,
        )
        self.qkv_proj = nn.Linear(hidden_size, 3 * hidden_size)
        self.o_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden_states, attention_mask=None, is_causal=False, cache=None, attn_implementation="sdpa"):
        batch, length, _ = hidden_states.shape
        qkv = self.qkv_proj(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, D)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)  # (B, H, P + T, D)
        attention = eager_attention if attn_implementation == "eager" else F.scaled_dot_product_attention
        out = attention(
            query,
            key,
            value,
            attn_mask=attention_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
        )
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class MhcMLP(nn.Module):
    def __init__(self, hidden_size, intermediate_size, hidden_act="gelu"):
        super().__init__()
        self.up_proj = nn.Linear(hidden_size, intermediate_size)
        self.act = ACT2FN[hidden_act]
        self.down_proj = nn.Linear(intermediate_size, hidden_size)

    def forward(self, x):
        return self.down_proj(self.act(self.up_proj(x)))


class MhcBlock(GradientCheckpointingLayer):
    """Pre-norm attention and feed-forward layers, each wrapped in its own hyper-connection."""

    def __init__(self, config, layer_idx):
        super().__init__()
        hc_kwargs = dict(
            kind=config.hyper_connection_type,
            dynamic=config.dynamic_hyper_connections,
            sinkhorn_iterations=config.sinkhorn_iterations,
            gate_init=config.hyper_connection_gate_init,
            residual_diagonal_init=config.residual_diagonal_init,
            eps=config.hyper_connection_eps,
            implementation=config.hyper_connection_implementation,
        )
        size, n = config.hidden_size, config.expansion_rate
        self.attn_hc = MhcHyperConnection(size, n, 2 * layer_idx, **hc_kwargs)
        self.attn_norm = MhcRMSNorm(size, config.rms_norm_eps)
        self.attn = MhcAttention(size, config.num_attention_heads, layer_idx, config.attention_dropout)
        self.mlp_hc = MhcHyperConnection(size, n, 2 * layer_idx + 1, **hc_kwargs)
        self.mlp_norm = MhcRMSNorm(size, config.rms_norm_eps)
        self.mlp = MhcMLP(size, config.intermediate_size, config.hidden_act)
        self.dropout = nn.Dropout(config.hidden_dropout)
        last = max(1, config.num_hidden_layers - 1)
        self.drop_path_rate = config.drop_path_rate * layer_idx / last

    def _branch(self, output):
        return drop_path(self.dropout(output), self.drop_path_rate, self.training)

    def forward(self, streams, attention_mask=None, is_causal=False, cache=None, attn_implementation="sdpa"):
        h, state = self.attn_hc(streams)
        out = self.attn(self.attn_norm(h), attention_mask=attention_mask, is_causal=is_causal, cache=cache,
                        attn_implementation=attn_implementation)  # fmt: skip
        streams = self.attn_hc.add_output(state, self._branch(out))
        h, state = self.mlp_hc(streams)
        return self.mlp_hc.add_output(state, self._branch(self.mlp(self.mlp_norm(h))))


class MhcPatchEmbedding(nn.Module):
    """Non-overlapping patches -> tokens (B, L, C), plus the fixed 2-D sinusoidal code (half rows, half columns)."""

    def __init__(self, config):
        super().__init__()
        self.patch_size, self.grid = config.patch_size, config.image_size // config.patch_size
        self.num_channels, self.image_size = config.num_channels, config.image_size
        self.proj = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size, stride=config.patch_size)

    def position_code(self, device):
        """(L, C): the row code in the first half of the channels, the column code in the second. Computed per call
        (it is tiny) rather than kept as a buffer, so loading on the meta device cannot leave it uninitialised."""
        rows = torch.arange(self.grid, device=device).repeat_interleave(self.grid)
        columns = torch.arange(self.grid, device=device).repeat(self.grid)
        half = self.proj.out_channels // 2
        return torch.cat([sinusoidal_code(rows, half), sinusoidal_code(columns, half)], dim=-1)

    def forward(self, pixel_values):
        tokens = self.proj(pixel_values).flatten(2).transpose(1, 2)  # (B, L, C), row-major patches
        return tokens + self.position_code(tokens.device).to(tokens.dtype)


class MhcPreTrainedModel(PreTrainedModel):
    config_class = MhcConfig
    config: MhcConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MhcBlock"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Conv2d):
            # the patch projection: unit gain (std 1/sqrt(fan_in)), so the patch content starts on the scale of the
            # unit-amplitude sinusoidal position code instead of 1/20th of it (with std 0.02 the classifier sees
            # mostly positions at first; MNIST after 150 steps: 72% -> 81% test accuracy)
            nn.init.normal_(module.weight, mean=0.0, std=module.weight[0].numel() ** -0.5)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, MhcRMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, MhcHyperConnection):
            module.reset_parameters(std)


@dataclass
class MhcModelOutput(ModelOutput):
    """Output of `MhcModel`.

    Args:
        last_hidden_state: (B, T, C) the stream average after the final RMSNorm.
        cache: the key/value cache for the next tokens (`use_cache=True`, causal text models).
        hidden_states: (B, T, C) tuple, the embeddings and each block's stream average (`output_hidden_states`).
        kept_patches: (B, L_keep) patch indices kept by `mask_ratio` (images in training; all patches otherwise).
    """

    last_hidden_state: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    kept_patches: torch.LongTensor | None = None


class MhcModel(MhcPreTrainedModel):
    """The mHC backbone: embeddings (tokens or patches), the hyper-connected blocks, the stream average and the
    final RMSNorm. For text it is causal or bidirectional as `config.is_causal` says."""

    def __init__(self, config: MhcConfig):
        super().__init__(config)
        if config.modality == "text":
            self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        else:
            self.embed_patches = MhcPatchEmbedding(config)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList([MhcBlock(config, i) for i in range(config.num_hidden_layers)])
        self.norm = MhcRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens if self.config.modality == "text" else self.embed_patches.proj

    def set_input_embeddings(self, value):
        if self.config.modality != "text":
            raise ValueError("set_input_embeddings applies to text models (modality='text')")
        self.embed_tokens = value

    # ----------------------------------------------------------------------------------------------- inputs
    def _embed_text(self, input_ids, attention_mask, position_ids, cache):
        past_length = cache.get_seq_length() if cache is not None else 0
        config = self.config
        # the mask comes back as None when it masks nothing
        input_ids, attention_mask, positions = validate_token_inputs(
            config.vocab_size, config.max_position_embeddings, input_ids, attention_mask, position_ids, past_length
        )
        batch, length = input_ids.shape
        hidden = self.embed_tokens(input_ids)
        hidden = hidden + sinusoidal_code(positions, self.config.hidden_size).to(hidden.dtype)
        mask, sdpa_causal = self._text_mask(attention_mask, batch, length, past_length, input_ids.device)
        return hidden, mask, sdpa_causal

    def _text_mask(self, attention_mask, batch, length, past_length, device):
        """(mask, sdpa_causal): a boolean (B, 1, T, P + T) mask (True = attend) or None, and whether SDPA should
        apply its own causal mask (only without a cache: SDPA aligns its causal mask to the top left)."""
        causal = self.config.is_causal
        if attention_mask is None:  # validate_token_inputs drops a mask of all ones
            if not causal or length == 1:
                return None, False  # every key (a decoded token sees the whole cache)
            if past_length == 0:
                return None, True
            return self._causal(length, past_length, device)[None, None], False
        allowed = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, P + T)
        if causal:
            allowed = allowed & self._causal(length, past_length, device)[None, None]
        # a query with no key to attend to (a padding position) attends to itself instead of producing NaN
        diagonal = torch.zeros(length, past_length + length, dtype=torch.bool, device=device)
        diagonal[torch.arange(length, device=device), torch.arange(length, device=device) + past_length] = True
        return allowed | (diagonal[None, None] & ~allowed.any(-1, keepdim=True)), False

    @staticmethod
    def _causal(length, past_length, device):
        keys = torch.arange(past_length + length, device=device)
        return keys[None, :] <= (torch.arange(length, device=device) + past_length)[:, None]

    def _embed_image(self, pixel_values):
        config = self.config
        require_tensor("pixel_values", pixel_values)
        if pixel_values.dim() != 4:
            raise ValueError(
                f"pixel_values must have shape (batch, channels, height, width); got rank {pixel_values.dim()} "
                f"{tuple(pixel_values.shape)}"
            )
        if not pixel_values.is_floating_point():
            raise ValueError(
                f"pixel_values must be a float tensor (the model's image processor makes one); got dtype "
                f"{pixel_values.dtype}"
            )
        batch, channels, height, width = pixel_values.shape
        if batch == 0:
            raise ValueError(f"pixel_values is empty (batch size 0): shape {tuple(pixel_values.shape)}")
        # float64 (numpy's default), float16 and bfloat16 images are converted to the model's dtype, as a float32
        # model would compute with them anyway; the result equals the call with float32 pixels of the same values
        pixel_values = pixel_values.to(self.embed_patches.proj.weight.dtype)
        if channels == 3 and config.num_channels == 1:
            # transformers' pipelines load every image as RGB: a one-channel model reads the channel mean (a gray
            # image converted to RGB gives back its gray values exactly)
            pixel_values = pixel_values.mean(dim=1, keepdim=True)
        elif channels != config.num_channels:
            raise ValueError(
                f"pixel_values has {channels} channels; this model takes num_channels={config.num_channels} "
                "(or 3, read as their mean, when num_channels=1)"
            )
        if (height, width) != (config.image_size, config.image_size):
            # also what an image_size edited in config.json without the processor (preprocessor_config.json) gives
            raise ValueError(
                f"pixel_values must be {config.image_size}x{config.image_size} (config.image_size={config.image_size}); "
                f"got {height}x{width}. The model's image processor resizes to its own size, which must equal "
                "config.image_size"
            )
        if not is_compiling() and not bool(torch.isfinite(pixel_values).all()):
            raise ValueError("pixel_values contains NaN or infinite values")
        tokens = self.embed_patches(pixel_values)  # (B, L, C)
        batch, num_patches, _ = tokens.shape
        kept = torch.arange(num_patches, device=tokens.device).expand(batch, -1)
        if self.training and config.mask_ratio > 0:
            # per image, keep a random subset of int(L * (1 - mask_ratio)) patches (in grid order)
            keep = int(num_patches * (1 - config.mask_ratio))
            order = torch.rand(batch, num_patches, device=tokens.device).argsort(dim=1)
            kept = order[:, :keep].sort(dim=1).values
            tokens = tokens.gather(1, kept.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        return tokens, kept

    # ----------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        input_ids=None,
        pixel_values=None,
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
            raise ValueError("inputs_embeds is not supported by mHC models; pass input_ids or pixel_values")
        if kwargs.get("output_attentions"):
            raise ValueError("output_attentions is not supported by mHC models (attention runs in fused SDPA)")
        check_unused_arguments(self, kwargs, logger)
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        config = self.config
        kept = None
        if config.modality == "text":
            if input_ids is None:
                raise ValueError("input_ids is required (this is a text model, modality='text')")
            if pixel_values is not None:
                raise ValueError("pixel_values given to a text model (modality='text')")
            use_cache = (
                use_cache if use_cache is not None else (config.use_cache and config.is_causal and not self.training)
            )
            if (use_cache or cache is not None) and not config.is_causal:
                raise ValueError(
                    "use_cache and a cache need a causal model (is_causal=True); a bidirectional encoder has none"
                )
            if self.gradient_checkpointing and self.training:
                use_cache = False
            cache = prepare_cache(cache if use_cache else None, use_cache, config)
            hidden, mask, causal = self._embed_text(input_ids, attention_mask, position_ids, cache)
        else:
            if pixel_values is None:
                raise ValueError("pixel_values is required (this is an image model, modality='image')")
            if input_ids is not None:
                raise ValueError("input_ids given to an image model (modality='image')")
            causal, mask, use_cache, cache = False, None, False, None
            hidden, kept = self._embed_image(pixel_values)

        hidden = self.dropout(hidden)
        n = config.expansion_rate
        streams = hidden.unsqueeze(-2).expand(*hidden.shape[:-1], n, hidden.shape[-1]).contiguous()  # (B, T, n, C)
        all_hidden = (hidden,) if output_hidden_states else None
        for block in self.layers:
            streams = block(streams, attention_mask=mask, is_causal=causal, cache=cache,
                            attn_implementation=config._attn_implementation)  # fmt: skip
            if output_hidden_states:
                all_hidden += (streams.mean(-2),)
        hidden = self.norm(streams.mean(-2))
        if output_hidden_states:
            all_hidden = all_hidden[:-1] + (hidden,)
        output = MhcModelOutput(last_hidden_state=hidden, cache=cache, hidden_states=all_hidden, kept_patches=kept)
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def residual_matrices(self, input_ids=None, pixel_values=None):
        """H_res of every hyper-connection (2 per block, in order), each (B, T, n, n), for the given inputs (eval
        mode, no masking)."""
        was_training = self.training
        self.eval()
        matrices = []
        hooks = [
            module.register_forward_hook(lambda m, args, out: matrices.append(m.coefficients(args[0])[2]))
            for module in self.modules()
            if isinstance(module, MhcHyperConnection) and module.n > 1
        ]
        try:
            self(input_ids=input_ids, pixel_values=pixel_values, use_cache=False)
        finally:
            for hook in hooks:
                hook.remove()
            self.train(was_training)
        return matrices

    def composite_gain(self, input_ids=None, pixel_values=None):
        """The largest absolute row sum of the product of all H_res matrices (max over tokens): how much the
        residual mixing across the whole depth can amplify a stream. 1 for doubly-stochastic H_res."""
        matrices = self.residual_matrices(input_ids=input_ids, pixel_values=pixel_values)
        if not matrices:
            return 1.0
        return float(composite_gain(matrices).max())


class MhcForCausalLM(MhcPreTrainedModel, GenerationMixin):
    """mHC causal LM (the original's `HyperConnectionDecodeTransformer`) with a KV cache for `generate`."""

    def __init__(self, config: MhcConfig):
        super().__init__(config)
        if config.modality != "text" or not config.is_causal:
            raise ValueError(
                f"MhcForCausalLM needs modality='text' and is_causal=True; got modality={config.modality!r}, "
                f"is_causal={config.is_causal!r}"
            )
        self.model = MhcModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
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
        r"""Args as `LlamaForCausalLM`; `labels` (B, T) with -100 for ignored positions (shifted inside)."""
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
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, num_items_in_batch=num_items_in_batch
            )
        output = CausalLMOutputWithPast(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, **{CACHE_FIELD: outputs.cache}
        )
        return output if return_dict else output.to_tuple()


class MhcForImageClassification(MhcPreTrainedModel):
    """mHC image classifier (the original's `ImageHyperConnectionTransformer`): patches -> hyper-connected blocks ->
    masked average pooling of the patch grid to `pool_size x pool_size` cells -> a linear classifier."""

    main_input_name = "pixel_values"

    def __init__(self, config: MhcConfig):
        super().__init__(config)
        if config.modality != "image":
            raise ValueError(f"MhcForImageClassification needs modality='image'; got {config.modality!r}")
        self.num_labels = config.num_labels
        self.model = MhcModel(config)
        self.classifier = nn.Linear(config.hidden_size * config.pool_size**2, config.num_labels)
        self.post_init()

    def forward(self, pixel_values=None, labels=None, output_hidden_states=None, return_dict=None, **kwargs):
        r"""`pixel_values` (B, num_channels, image_size, image_size) as the model's image processor makes them, in any
        float dtype (converted to the model's, so numpy's float64 works); `labels` (B,) class ids in [0, num_labels),
        any integer dtype. Masking (`mask_ratio`) applies in training only."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        kwargs.pop("num_items_in_batch", None)  # Trainer's count for summed losses; this head averages over the batch
        if labels is not None:
            batch = (
                pixel_values.shape[0] if isinstance(pixel_values, torch.Tensor) and pixel_values.dim() == 4 else None
            )
            labels = check_class_labels(labels, batch, self.num_labels)
        outputs = self.model(
            pixel_values=pixel_values, output_hidden_states=output_hidden_states, return_dict=True, **kwargs
        )
        grid = self.config.image_size // self.config.patch_size
        pooled = masked_average_pool(outputs.last_hidden_state, outputs.kept_patches, grid, self.config.pool_size)
        logits = self.classifier(pooled.flatten(1))
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        output = ImageClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)
        return output if return_dict else output.to_tuple()


__all__ = [
    "MhcAttention",
    "MhcBlock",
    "MhcForCausalLM",
    "MhcForImageClassification",
    "MhcHyperConnection",
    "MhcModel",
    "MhcModelOutput",
    "MhcPreTrainedModel",
]
