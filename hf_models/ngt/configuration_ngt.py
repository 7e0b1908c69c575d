"""Configuration of the Newtonian Gravity Transformer (NGT).

NGT replaces dot-product attention by a gravity kernel: every token is a particle with a mass m (looked up by
token id) and latent coordinates z (learned per position, then evolved from layer to layer). Head h scores the
pair (i, j) from their squared distance d_ij^2 in a per-head projection of z.

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


GRAVITY_KERNELS = ("repulsive", "attractive")
RADIUS_CUTOFFS = ("hard", "soft", "none")
GRAVITY_IMPLEMENTATIONS = ("chunked", "naive")


class NgtConfig(PretrainedConfig):
    r"""Configuration of an NGT causal language model.

    Args:
        vocab_size (`int`, defaults to 32000): number of token ids.
        hidden_size (`int`, defaults to 256): width of the hidden stream h.
        num_hidden_layers (`int`, defaults to 6): number of gravity blocks.
        num_attention_heads (`int`, defaults to 8): gravity heads; `hidden_size` must be divisible by it.
        intermediate_size (`int`, defaults to 1024): width of the GELU feed-forward layer.
        hidden_act (`str`, defaults to `"gelu"`): feed-forward activation (a key of `transformers.activations`).
        max_position_embeddings (`int`, defaults to 256): number of learned input coordinates z^0, i.e. the longest
            sequence the model accepts. Longer inputs raise a `ValueError` (never silent truncation).
        coord_dim (`int`, defaults to 32): size of the latent coordinate vector z carried across layers.
        head_coord_dim (`int`, defaults to 16): size of each head's projection c = W_h z in which distances are
            measured.
        gravity_kernel (`str`, defaults to `"repulsive"`): `"repulsive"` is the original score
            `s_ij = m_i m_j (beta - gamma / (d_ij^2 + eps))`, which never lets a token attend to itself
            (d_ii = 0 gives the most negative score) and, with gamma > 0, prefers *distant* tokens inside the radius.
            `"attractive"` flips the sign of the gravity term, `s_ij = m_i m_j (beta + gamma / (d_ij^2 + eps))`, so
            that nearby tokens attract (the intent of the design). It requires `self_attention=True`, because the
            kernel at d_ii = 0 would otherwise be the maximum of every row.
        gravity_epsilon (`float`, defaults to 1e-6): softening eps in `1 / (d^2 + eps)`. Use a value near 1 with the
            attractive kernel (Plummer softening) to bound the largest score.
        mass_in_value (`bool`, defaults to `False`): the original's variant in which masses scale the values
            (`v_j <- m_j v_j`) and the score has no masses, `s_ij = -gamma / (d_ij^2 + eps)` (or `+` for the
            attractive kernel). There is no beta then: a bias added to a whole row cancels in the softmax.
        self_attention (`bool`, defaults to `False`): if `True`, the score of a token for itself is a learned
            per-head logit `s_self` instead of the kernel at d = 0.
        radius_cutoff (`str`, defaults to `"hard"`): pairs farther apart than the learned radius r = softplus(rho)
            are suppressed. `"hard"`: a hard mask in the forward pass with the gradient of the soft mask in the
            backward pass (straight-through), so r is learnable (the original's boolean mask gave it no gradient).
            `"soft"`: the log of a sigmoid gate, `-softplus(k (d^2 / r^2 - 1))`, added to the score (the original's
            soft cutoff multiplied the score by a gate, which pulls negative scores *up* toward 0 instead of
            suppressing them). `"none"`: no radius.
        initial_radius (`float`, defaults to 4.0): initial raw radius rho; the radius is softplus(rho) (about 4.02).
        cutoff_sharpness (`float`, defaults to 10.0): k in the soft gate; at d^2 = 2 r^2 the soft penalty is about -k.
        repulsion_weight (`float`, defaults to 0.05): lambda of the repulsion regulariser added to the training loss,
            `lambda * mean_{i<j} m_i m_j / max(|z_i - z_j|, min_dist)^2` over sampled final-layer coordinates.
            0 disables it.
        repulsion_interval (`int`, defaults to 1): compute the regulariser on every n-th training forward.
        repulsion_min_dist (`float`, defaults to 1e-3): distance clamp of the regulariser.
        repulsion_num_samples (`int`, defaults to 64): positions sampled per sequence for the regulariser
            (0 = all positions).
        gravity_implementation (`str`, defaults to `"chunked"`): `"chunked"` computes squared distances with
            matmuls, one block of queries at a time (see `gravity_recompute`); `"naive"` is the
            readable reference that materialises the (batch, heads, queries, keys, coords) difference tensor.
        gravity_chunk_size (`int`, defaults to 128): queries per block of the chunked path.
        gravity_recompute (`bool`, defaults to `True`): run each block as a fused autograd function that keeps no
            (queries x keys) matrix between forward and backward and rebuilds one block's scores in the backward
            (memory close to fused attention, and faster). `False` runs each block through plain autograd, which
            keeps the score matrices (a second, independent path for checking).
        attention_dropout (`float`, defaults to 0.1): dropout on the attention probabilities.
        hidden_dropout (`float`, defaults to 0.1): dropout inside the feed-forward layer and on its output.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of every LayerNorm.
        initializer_range (`float`, defaults to 0.02): std of the normal init of linear layers and token embeddings.
        use_cache (`bool`, defaults to `True`): return the cache of (coordinates, masses, values) for generation.
        tie_word_embeddings (`bool`, defaults to `True`): tie the LM head to the token embedding, as the original.
    """

    model_type = "hfm_ngt"
    keys_to_ignore_at_inference = ["cache", "past_key_values", "coordinates", "masses"]

    def __init__(
        self,
        vocab_size=32000,
        hidden_size=256,
        num_hidden_layers=6,
        num_attention_heads=8,
        intermediate_size=1024,
        hidden_act="gelu",
        max_position_embeddings=256,
        coord_dim=32,
        head_coord_dim=16,
        gravity_kernel="repulsive",
        gravity_epsilon=1e-6,
        mass_in_value=False,
        self_attention=False,
        radius_cutoff="hard",
        initial_radius=4.0,
        cutoff_sharpness=10.0,
        repulsion_weight=0.05,
        repulsion_interval=1,
        repulsion_min_dist=1e-3,
        repulsion_num_samples=64,
        gravity_implementation="chunked",
        gravity_chunk_size=128,
        gravity_recompute=True,
        attention_dropout=0.1,
        hidden_dropout=0.1,
        layer_norm_eps=1e-5,
        initializer_range=0.02,
        use_cache=True,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=True,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.coord_dim = coord_dim
        self.head_coord_dim = head_coord_dim
        self.gravity_kernel = gravity_kernel
        self.gravity_epsilon = gravity_epsilon
        self.mass_in_value = mass_in_value
        self.self_attention = self_attention
        self.radius_cutoff = radius_cutoff
        self.initial_radius = initial_radius
        self.cutoff_sharpness = cutoff_sharpness
        self.repulsion_weight = repulsion_weight
        self.repulsion_interval = repulsion_interval
        self.repulsion_min_dist = repulsion_min_dist
        self.repulsion_num_samples = repulsion_num_samples
        self.gravity_implementation = gravity_implementation
        self.gravity_chunk_size = gravity_chunk_size
        self.gravity_recompute = gravity_recompute
        self.attention_dropout = attention_dropout
        self.hidden_dropout = hidden_dropout
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        # The Hub loader needs the code files named in `auto_map`; every head of the family is listed so that a folder
        # saved from any of them loads with every Auto class.
        kwargs.setdefault(
            "auto_map",
            {
                "AutoConfig": "configuration_ngt.NgtConfig",
                "AutoModel": "modeling_ngt.NgtModel",
                "AutoModelForCausalLM": "modeling_ngt.NgtForCausalLM",
            },
        )
        # vocab_size is checked here, before PretrainedConfig's own checks, which compare the token ids with it
        check_integers(self, ("vocab_size",))
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
        self._validate_ngt()

    def _validate_ngt(self):
        check_finite_numbers(self)  # first: NaN and inf pass the range checks below
        check_activation(self)
        check_integers(self, ("hidden_size", "num_hidden_layers", "num_attention_heads",
                              "intermediate_size", "max_position_embeddings", "coord_dim", "head_coord_dim",
                              "gravity_chunk_size", "repulsion_interval"))  # fmt: skip
        check_divisible(self, "hidden_size", "num_attention_heads")
        check_choice(self, "gravity_kernel", GRAVITY_KERNELS)
        check_choice(self, "radius_cutoff", RADIUS_CUTOFFS)
        check_choice(self, "gravity_implementation", GRAVITY_IMPLEMENTATIONS)
        if self.gravity_kernel == "attractive" and not self.self_attention:
            config_error(
                self,
                "gravity_kernel",
                self.gravity_kernel,
                "the attractive kernel needs self_attention=True (at d_ii = 0 the kernel is the maximum of every row, "
                "so each token would attend only to itself)",
            )
        check_numbers(
            self, ("gravity_epsilon", "cutoff_sharpness", "repulsion_min_dist", "layer_norm_eps"), "positive"
        )
        check_numbers(self, ("attention_dropout", "hidden_dropout"), "fraction")
        check_numbers(self, ("repulsion_weight", "initializer_range"), "non_negative")
        check_numbers(self, ("initial_radius",))
        num_samples = self.repulsion_num_samples
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples == 1 or num_samples < 0:
            config_error(self, "repulsion_num_samples", num_samples, "must be 0 (all positions) or an integer >= 2")
        check_flags(self, ("mass_in_value", "self_attention", "gravity_recompute"))


__all__ = ["NgtConfig"]
