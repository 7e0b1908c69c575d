"""Configuration of mHC (Manifold-Constrained Hyper-Connections) transformers.

mHC (arXiv 2512.24880) widens the residual stream into n parallel streams. Around every attention and feed-forward
layer, learned coefficients collapse the streams into the layer input (H_pre), spread the layer output back over the
streams (H_post) and mix the streams among themselves (H_res, projected onto the doubly-stochastic matrices with
Sinkhorn-Knopp so that the composite mixing over many layers keeps its gain). Hyper-Connections (HC, arXiv
2409.19606) is the unconstrained original, kept as a switch for ablations.

One configuration serves the three models of the family: a causal LM (`MhcForCausalLM`), a bidirectional text
encoder (`MhcModel`) and an image classifier over patches (`MhcForImageClassification`).

This file is shipped to the Hub next to the weights: it imports nothing but `transformers` and the shared checks
beside it (which import no torch).
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


HYPER_CONNECTION_TYPES = ("mhc", "hc")
HYPER_CONNECTION_IMPLEMENTATIONS = ("auto", "eager", "compile")
MODALITIES = ("text", "image")


class MhcConfig(PretrainedConfig):
    r"""Configuration of an mHC transformer (the original project's `rate`, `dim`, `n_layers`, ... in HF names).

    Args:
        modality (`str`, defaults to `"text"`): `"text"` embeds token ids (causal LM, text encoder); `"image"` embeds
            non-overlapping image patches (image classifier).
        vocab_size (`int`, defaults to 256): number of token ids (text).
        hidden_size (`int`, defaults to 256): width C of each residual stream (the original's `dim`); even, for the
            sinusoidal position code.
        num_hidden_layers (`int`, defaults to 6): transformer blocks (`n_layers`); each has two hyper-connections,
            one around attention and one around the feed-forward layer.
        num_attention_heads (`int`, defaults to 4): attention heads (`n_heads`); divides `hidden_size`.
        intermediate_size (`int`, optional): feed-forward width; defaults to 4 * `hidden_size`.
        hidden_act (`str`, defaults to `"gelu"`): feed-forward activation (a key of `transformers.activations`).
        max_position_embeddings (`int`, defaults to 1024): longest text sequence, cache included (`max_len`).
            Positions use the original's fixed sinusoidal code; longer inputs raise a `ValueError`.
        is_causal (`bool`, defaults to `True`): causal self-attention. The causal LM requires `True`, the image
            classifier `False`; `MhcModel` used as a text encoder follows it (set `False` for a bidirectional
            encoder). Explicit, so that causality never depends on whether a mask happened to be passed.
        expansion_rate (`int`, defaults to 4): number of residual streams n (the original's `rate`). `1` is
            exactly a plain pre-norm residual transformer: no coefficients, `x + F(norm(x))`.
        hyper_connection_type (`str`, defaults to `"mhc"`): `"mhc"` is the paper's manifold-constrained form:
            with x' = RMSNorm(vec(x)) (1 x nC, no affine weight) and one fused projection phi (nC x (2n + n^2)),
            `H~ = alpha * (x' phi) + b` for pre, post and res (one alpha each, no tanh), `H_pre = sigmoid(H~_pre)`,
            `H_post = 2 sigmoid(H~_post)`, `H_res = Sinkhorn-Knopp(exp(H~_res))`.
            `"hc"` is the original Hyper-Connections for ablation: per-stream RMSNorm, a per-stream projection
            (C x (2 + n)) through tanh, `H = b + alpha * tanh(...)` with no constraint at all (HC's static init:
            H_pre one-hot on stream `layer mod n`, H_post = 1, H_res = I).
        dynamic_hyper_connections (`bool`, defaults to `True`): input-dependent coefficients (the x' phi term); `False`
            keeps only the static, learned b (the original's `dynamic=False`).
        sinkhorn_iterations (`int`, defaults to 20): t_max, Sinkhorn-Knopp iterations (each normalises the columns,
            then the rows).
        hyper_connection_gate_init (`float`, defaults to 0.01): initial gating factors alpha (the paper's value).
        residual_diagonal_init (`float`, defaults to 4.0): initial static bias of H~_res on the diagonal (0 off
            the diagonal). The paper does not state its static biases. Sinkhorn of exp(I) is far from the identity
            (0.475 on the diagonal, 0.175 elsewhere for n = 4), so the diagonal starts at d = 4: Sinkhorn of a
            matrix with e^d on the diagonal and 1 elsewhere is itself divided by e^d + n - 1, i.e. 0.948 on the
            diagonal for n = 4 (0.982 for n = 2): each stream starts by keeping mostly itself. The other static
            biases start the block as a plain residual: b_pre = -log(n - 1), so H_pre = 1/n (the layer reads the
            mean of the streams), and b_post = 0, so H_post = 2 sigmoid(0) = 1 (every stream receives the layer
            output). With identical streams (they start as copies of the embedding) the first forward is then
            exactly a plain residual network, up to the alpha-scaled dynamic terms.
        hyper_connection_eps (`float`, defaults to 1e-6): epsilon of the RMSNorm that feeds the coefficients.
        hyper_connection_implementation (`str`, defaults to `"auto"`): how the mHC hyper-connections (the coefficients
            with Sinkhorn-Knopp, the collapse and the stream update) run in training. `"auto"`: on fused C++ CPU
            kernels when the streams are float32 on the CPU (built once with `torch.utils.cpp_extension` on first use,
            which needs a C++ compiler; cached in `TORCH_EXTENSIONS_DIR`, ~/.cache/torch_extensions by default; if
            they cannot be built, or the environment sets `HF_MODELS_MHC_KERNELS=0`, a warning and the eager path),
            the eager PyTorch ops otherwise. `"eager"`: always the PyTorch ops. `"compile"`: the same math as
            plain-op functions through `torch.compile` (inductor: C++ on the CPU, Triton on GPUs; the first steps
            pay the compilation). All three compute the same equations, tested to agree on outputs and gradients.
            Evaluation and generation always run eager, so loading a model never builds anything. Applies to
            `hyper_connection_type="mhc"` with dynamic coefficients.
        rms_norm_eps (`float`, defaults to 1e-6): epsilon of the layers' RMSNorms.
        hidden_dropout (`float`, defaults to 0.1): dropout on the embeddings, the attention output and the feed-forward
            output (the original's `dropout`).
        attention_dropout (`float`, defaults to 0.0): dropout on the attention probabilities.
        drop_path_rate (`float`, defaults to 0.0): stochastic depth: the layer outputs of block l are dropped per
            sample with probability `drop_path_rate * l / (num_hidden_layers - 1)` in training (the original's
            `drop_path`). It drops the layer output before H_post spreads it, never the residual streams.
        image_size (`int`, defaults to 32): side of the (square) input image.
        patch_size (`int`, defaults to 4): side of the non-overlapping patches; divides `image_size`.
        num_channels (`int`, defaults to 1): image channels (`in_channels`).
        pool_size (`int`, defaults to 4): the image head average-pools the patch grid to `pool_size x pool_size`
            cells and classifies their concatenation.
        mask_ratio (`float`, defaults to 0.0): share of patches dropped at random per image in training (never at
            inference), as MAE-style augmentation: each image keeps `int(num_patches * (1 - mask_ratio))` patches.
            (The original accepted `mask_ratio` but always dropped 10%.)
        initializer_range (`float`, defaults to 0.02): std of the normal init of linear and embedding weights.
        use_cache (`bool`, defaults to `True`): return the key/value cache for generation.
        tie_word_embeddings (`bool`, defaults to `False`): the original's LM head is its own linear layer.
        num_labels / id2label / label2id: the image classes (`num_classes`), as any transformers classifier.
    """

    model_type = "hfm_mhc"
    keys_to_ignore_at_inference = ["cache", "past_key_values", "kept_patches"]

    def __init__(
        self,
        modality="text",
        vocab_size=256,
        hidden_size=256,
        num_hidden_layers=6,
        num_attention_heads=4,
        intermediate_size=None,
        hidden_act="gelu",
        max_position_embeddings=1024,
        is_causal=True,
        expansion_rate=4,
        hyper_connection_type="mhc",
        dynamic_hyper_connections=True,
        sinkhorn_iterations=20,
        hyper_connection_gate_init=0.01,
        residual_diagonal_init=4.0,
        hyper_connection_eps=1e-6,
        hyper_connection_implementation="auto",
        rms_norm_eps=1e-6,
        hidden_dropout=0.1,
        attention_dropout=0.0,
        drop_path_rate=0.0,
        image_size=32,
        patch_size=4,
        num_channels=1,
        pool_size=4,
        mask_ratio=0.0,
        initializer_range=0.02,
        use_cache=True,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=False,
        **kwargs,
    ):
        self.modality = modality
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size if intermediate_size is not None else 4 * hidden_size
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.is_causal = is_causal
        self.expansion_rate = expansion_rate
        self.hyper_connection_type = hyper_connection_type
        self.dynamic_hyper_connections = dynamic_hyper_connections
        self.sinkhorn_iterations = sinkhorn_iterations
        self.hyper_connection_gate_init = hyper_connection_gate_init
        self.residual_diagonal_init = residual_diagonal_init
        self.hyper_connection_eps = hyper_connection_eps
        self.hyper_connection_implementation = hyper_connection_implementation
        self.rms_norm_eps = rms_norm_eps
        self.hidden_dropout = hidden_dropout
        self.attention_dropout = attention_dropout
        self.drop_path_rate = drop_path_rate
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.pool_size = pool_size
        self.mask_ratio = mask_ratio
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        kwargs.setdefault(
            "auto_map",
            {
                "AutoConfig": "configuration_mhc.MhcConfig",
                "AutoModel": "modeling_mhc.MhcModel",
                "AutoModelForCausalLM": "modeling_mhc.MhcForCausalLM",
                "AutoModelForImageClassification": "modeling_mhc.MhcForImageClassification",
            },
        )
        num_labels = kwargs.get("num_labels")
        if num_labels is not None and (
            isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 0
        ):
            # checked before transformers builds id2label from it (a TypeError, or no classes, otherwise)
            raise ValueError(f"MhcConfig.num_labels={num_labels!r} is invalid: must be a number of classes >= 1")
        # vocab_size is checked here, before PretrainedConfig's own checks, which compare the token ids with it
        check_integers(self, ("vocab_size",))
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
        self._validate_mhc()

    @property
    def num_patches(self):
        return (self.image_size // self.patch_size) ** 2

    def _validate_mhc(self):
        check_finite_numbers(self)
        check_activation(self)
        check_choice(self, "modality", MODALITIES)
        check_choice(self, "hyper_connection_type", HYPER_CONNECTION_TYPES)
        check_choice(self, "hyper_connection_implementation", HYPER_CONNECTION_IMPLEMENTATIONS)
        check_integers(self, ("hidden_size", "num_hidden_layers", "num_attention_heads",
                              "intermediate_size", "max_position_embeddings", "expansion_rate", "sinkhorn_iterations",
                              "image_size", "patch_size", "num_channels", "pool_size"))  # fmt: skip
        check_divisible(self, "hidden_size", "num_attention_heads")
        if self.hidden_size % 2:
            config_error(self, "hidden_size", self.hidden_size, "must be even (sinusoidal position code)")
        if self.modality == "image":
            check_divisible(self, "image_size", "patch_size")
            if self.hidden_size % 4:
                config_error(self, "hidden_size", self.hidden_size,
                             "must be divisible by 4 for images (2-D sinusoidal code)")  # fmt: skip
            if self.pool_size > self.image_size // self.patch_size:
                config_error(self, "pool_size", self.pool_size,
                             f"must be <= the patch grid side {self.image_size // self.patch_size}")  # fmt: skip
            if self.is_causal:
                config_error(self, "is_causal", self.is_causal, "must be false for images (patches have no order)")
            if not self.num_labels:  # 0, or None without id2label: a classifier with no class to predict
                config_error(self, "num_labels", self.num_labels,
                             "an image classifier needs at least one class (num_labels >= 1)")  # fmt: skip
        check_numbers(self, ("hyper_connection_eps", "rms_norm_eps"), "positive")
        check_numbers(self, ("hyper_connection_gate_init", "residual_diagonal_init", "initializer_range"))
        check_numbers(self, ("hidden_dropout", "attention_dropout", "drop_path_rate", "mask_ratio"), "fraction")
        if self.modality == "image" and int(self.num_patches * (1 - self.mask_ratio)) < 1:
            config_error(self, "mask_ratio", self.mask_ratio, f"keeps no patch of {self.num_patches}")
        check_flags(self, ("is_causal", "dynamic_hyper_connections"))


__all__ = ["MhcConfig"]
