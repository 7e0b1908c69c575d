"""Configuration of Titans-TS: a forecaster built around Titans' neural long-term memory, an MLP whose weights learn
at test time ("Titans: Learning to Memorize at Test Time", Behrouz, Zhong and Mirrokni, arXiv 2501.00663), in the
memory-as-context (MAC) layout, with transformers' time-series conventions (`past_values` in, `future_values` as
labels, `context_length`, `prediction_length`, `num_input_channels`, as `PatchTSTForPrediction`).

Each channel is its own series (channel independence): it is scaled by its own statistics over the context, cut
into patches, and each patch becomes a token of width `hidden_size`. The tokens go through `num_hidden_layers`
blocks of segmented causal attention with persistent memory tokens; the blocks named in `neural_memory_layers` also
hold a neural memory, whose weights are the state that forward returns and accepts back.
"""

from transformers import PretrainedConfig

from .shared_config_checks import (
    check_activation,
    check_choice,
    check_divisible,
    check_finite_numbers,
    check_flags,
    check_integers,
    check_numbers,
    config_error,
)


SCALINGS = ("std", "mean", None)
LOSSES = ("mse", "mae")
MEMORY_IMPLEMENTATIONS = ("chunked", "reference")
NORM_TYPES = ("layernorm", "batchnorm")


class TitansTsConfig(PretrainedConfig):
    r"""
    Args:
        context_length (`int`, defaults to 336): time steps of `past_values` (the look-back window).
        prediction_length (`int`, defaults to 96): time steps forecast (`future_values`).
        num_input_channels (`int`, defaults to 7): channels (variables) of the series; each is forecast.
        patch_length (`int`, defaults to 16): time steps per patch token.
        patch_stride (`int`, defaults to 8): time steps between the starts of consecutive patches. Patches are taken
            from the end of the context, so `num_patches = (context_length - patch_length) // patch_stride + 1` and
            the oldest values that do not fill a patch are dropped (as transformers' PatchTST does).
        scaling (`str` or `None`, defaults to `"std"`): per-window, per-channel scaling of the context before patching,
            undone on the forecast (`"std"`: mean and standard deviation; `"mean"`: mean absolute value; `None`: off).
        hidden_size (`int`, defaults to 64): width of the patch tokens.
        num_hidden_layers (`int`, defaults to 2): blocks.
        num_attention_heads (`int`, defaults to 4): attention heads per block.
        intermediate_size (`int`, defaults to 128): feed-forward width.
        hidden_act (`str`, defaults to `"gelu"`): feed-forward activation (and the memory MLP's).
        segment_length (`int`, defaults to 64): C, patch tokens per attention segment. Attention stays within a
            segment (causal there unless `is_causal=False`): what earlier segments saw reaches later ones only through
            the neural memory. At least `num_patches` gives one segment per window.
        is_causal (`bool`, defaults to `True`): causal attention within a segment (MAC's, from language modelling).
            `False`: every token of a segment sees the whole segment and all of its retrieved h_t, as an encoder does
            (the whole context of a forecast is known, so nothing leaks; segments still never see later segments).
        num_persistent_memory_tokens (`int`, defaults to 4): N_p learned tokens [p_1 ... p_Np] every segment attends
            to (Eq. 19).
        neural_memory_layers (`list[int]`, defaults to `[0]`): the blocks (0-based) with a neural memory (MAC). In
            such a block, segment S(t) attends to [p ‖ h_t ‖ S(t)] with h_t = M*_{t-1}(q_t) retrieved from the memory
            before the segment; the attention output y_t is then written into the memory and the block's output is
            y_t ⊙ σ(M*_t(y_t)).
        memory_num_heads (`int`, defaults to 2): independent memories per layer, each on its own slice of keys,
            values and queries.
        memory_head_dim (`int`, defaults to 16): d_h, the width of each memory's keys, values and queries.
        memory_depth (`int`, defaults to 2): L_M, layers of the memory MLP (1: a linear memory).
        memory_expansion_factor (`int`, defaults to 2): hidden width of the memory MLP, in multiples of d_h.
        memory_chunk_size (`int`, defaults to 4): b, tokens per memory update. The surprises of a chunk's tokens are
            summed into one update, and the momentum, decay and lr modulation are per chunk.
        memory_batch_size (`int` or `None`, defaults to `None`): tokens whose surprises are all taken at the same
            weights, those at the start of the memory batch (the paper's mini-batch gradient descent, Eq. 16-17); a
            multiple of `memory_chunk_size`. `None`: `memory_chunk_size` (each chunk's surprise at the weights the
            previous chunk left, as in the paper). Larger batches compute more chunks at once, but every chunk of a
            batch then follows the gradient at its start, so a memory batch much longer than what the learning rate
            allows overshoots.
        memory_max_lr (`float`, defaults to 0.1): the largest momentary learning rate: θ_t = max_lr · σ(w_θ·x_t).
        memory_momentum (`bool`, defaults to `True`): S_t = η_t S_{t-1} - θ_t ∇ℓ (off: S_t = -θ_t ∇ℓ).
        memory_momentum_order (`int`, defaults to 1): with momentum, the number of nested momentum accumulators
            (S^(k)_t = η_t S^(k)_{t-1} + S^(k-1)_t); above 1 the update is a learned, data-dependent softmax mixture
            of the orders.
        memory_weight_decay (`bool`, defaults to `True`): the forgetting gate: M_t = (1 - α_t) M_{t-1} + S_t.
        memory_qk_rmsnorm (`bool`, defaults to `True`): RMS-normalise the memory's queries and keys (the paper
            ℓ2-normalises them).
        memory_per_parameter_lr (`bool`, defaults to `False`): a learned, data-dependent factor in (0, 1) per memory
            weight matrix and chunk that scales its update.
        memory_attention_pool_chunks (`bool`, defaults to `False`): the per-chunk gates (momentum, decay, lr
            modulation, momentum mixture) read an attention-pooled summary of the chunk instead of its mean.
        memory_spectral_norm_surprises (`bool`, defaults to `False`): each chunk's update of each weight matrix is
            divided by its spectral norm and scaled by the chunk's mean learning rate (its direction kept, its size
            set by the learning rate alone).
        memory_implementation (`str`, defaults to `"chunked"`): `"chunked"` (the surprises of every chunk of a memory
            batch at once as batched matmuls, gradients written out by hand) or `"reference"` (token by token, each
            surprise from `torch.autograd.grad`: the readable oracle, tested equal).
        norm_type (`str`, defaults to `"layernorm"`): `"layernorm"`: pre-norm blocks with LayerNorm and a final
            LayerNorm; `"batchnorm"`: PatchTST's post-norm blocks, x <- BN(x + o), x <- BN(x + FFN(x)), with batch
            normalisation of each hidden feature over the batch's tokens (running statistics in eval mode) and no
            final norm. In training the batch statistics mix the windows of a batch (eval mode keeps each window's
            forecast its own), and with gradient checkpointing the running statistics see each batch twice.
        hidden_dropout (`float`, defaults to 0.0): dropout on the block outputs.
        attention_dropout (`float`, defaults to 0.0): dropout on the attention probabilities.
        head_dropout (`float`, defaults to 0.0): dropout before the prediction head.
        loss (`str`, defaults to `"mse"`): the training loss on `future_values`, `"mse"` or `"mae"`.
        layer_norm_eps (`float`, defaults to 1e-5): LayerNorm epsilon.
        initializer_range (`float`, defaults to 0.02): std of the normal init of the linear layers.
    """

    model_type = "hfm_titans_ts"

    def __init__(
        self,
        context_length=336,
        prediction_length=96,
        num_input_channels=7,
        patch_length=16,
        patch_stride=8,
        scaling="std",
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        hidden_act="gelu",
        segment_length=64,
        is_causal=True,
        num_persistent_memory_tokens=4,
        neural_memory_layers=(0,),
        memory_num_heads=2,
        memory_head_dim=16,
        memory_depth=2,
        memory_expansion_factor=2,
        memory_chunk_size=4,
        memory_batch_size=None,
        memory_max_lr=0.1,
        memory_momentum=True,
        memory_momentum_order=1,
        memory_weight_decay=True,
        memory_qk_rmsnorm=True,
        memory_per_parameter_lr=False,
        memory_attention_pool_chunks=False,
        memory_spectral_norm_surprises=False,
        memory_implementation="chunked",
        norm_type="layernorm",
        hidden_dropout=0.0,
        attention_dropout=0.0,
        head_dropout=0.0,
        loss="mse",
        layer_norm_eps=1e-5,
        initializer_range=0.02,
        **kwargs,
    ):
        self.context_length = context_length
        self.prediction_length = prediction_length
        self.num_input_channels = num_input_channels
        self.patch_length = patch_length
        self.patch_stride = patch_stride
        self.scaling = scaling
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.segment_length = segment_length
        self.is_causal = is_causal
        self.num_persistent_memory_tokens = num_persistent_memory_tokens
        self.neural_memory_layers = (
            list(neural_memory_layers) if isinstance(neural_memory_layers, tuple) else (neural_memory_layers)
        )
        self.memory_num_heads = memory_num_heads
        self.memory_head_dim = memory_head_dim
        self.memory_depth = memory_depth
        self.memory_expansion_factor = memory_expansion_factor
        self.memory_chunk_size = memory_chunk_size
        self.memory_batch_size = memory_batch_size
        self.memory_max_lr = memory_max_lr
        self.memory_momentum = memory_momentum
        self.memory_momentum_order = memory_momentum_order
        self.memory_weight_decay = memory_weight_decay
        self.memory_qk_rmsnorm = memory_qk_rmsnorm
        self.memory_per_parameter_lr = memory_per_parameter_lr
        self.memory_attention_pool_chunks = memory_attention_pool_chunks
        self.memory_spectral_norm_surprises = memory_spectral_norm_surprises
        self.memory_implementation = memory_implementation
        self.norm_type = norm_type
        self.hidden_dropout = hidden_dropout
        self.attention_dropout = attention_dropout
        self.head_dropout = head_dropout
        self.loss = loss
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        kwargs.setdefault(
            "auto_map",
            {
                "AutoConfig": "configuration_titans_ts.TitansTsConfig",
                "AutoModel": "modeling_titans_ts.TitansTsModel",
                "AutoModelForTimeSeriesPrediction": "modeling_titans_ts.TitansTsForPrediction",
            },
        )
        super().__init__(**kwargs)
        self._validate_titans_ts()

    @property
    def num_patches(self):
        """Patch tokens per window: (context_length - patch_length) // patch_stride + 1."""
        return (self.context_length - self.patch_length) // self.patch_stride + 1

    def _validate_titans_ts(self):
        check_finite_numbers(self)
        check_activation(self)
        check_integers(self, ("context_length", "prediction_length", "num_input_channels", "patch_length",
                              "patch_stride", "hidden_size", "num_hidden_layers", "num_attention_heads",
                              "intermediate_size", "segment_length", "memory_num_heads", "memory_head_dim",
                              "memory_depth", "memory_expansion_factor", "memory_chunk_size",
                              "memory_momentum_order"))  # fmt: skip
        check_integers(self, ("num_persistent_memory_tokens",), minimum=0)
        if self.patch_length > self.context_length:
            config_error(self, "patch_length", self.patch_length, f"must be <= context_length={self.context_length}")
        check_divisible(self, "hidden_size", "num_attention_heads")
        layers = self.neural_memory_layers
        if not isinstance(layers, list) or any(
            isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.num_hidden_layers for i in layers
        ):
            config_error(self, "neural_memory_layers", layers,
                         f"must be a list of block indices in [0, {self.num_hidden_layers})")  # fmt: skip
        if len(set(layers)) != len(layers):
            config_error(self, "neural_memory_layers", layers, "names a block twice")
        if self.memory_batch_size is not None:
            check_integers(self, ("memory_batch_size",))
            check_divisible(self, "memory_batch_size", "memory_chunk_size")
        check_flags(self, ("is_causal", "memory_momentum", "memory_weight_decay", "memory_qk_rmsnorm",
                           "memory_per_parameter_lr", "memory_attention_pool_chunks",
                           "memory_spectral_norm_surprises"))  # fmt: skip
        check_choice(self, "scaling", SCALINGS)
        check_choice(self, "loss", LOSSES)
        check_choice(self, "norm_type", NORM_TYPES)
        check_choice(self, "memory_implementation", MEMORY_IMPLEMENTATIONS)
        check_numbers(self, ("hidden_dropout", "attention_dropout", "head_dropout"), "fraction")
        check_numbers(self, ("memory_max_lr", "layer_norm_eps", "initializer_range"), "positive")


__all__ = ["TitansTsConfig"]
