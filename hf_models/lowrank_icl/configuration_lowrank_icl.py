"""Configuration of LowRank ICL: an in-context-learning transformer that reads a prompt of feature vectors (no
vocabulary) with low-rank positional embeddings and layer-specific sparse attention masks, for the table-connectivity
task. Following "What Can Transformers Learn In-Context?" (Garg et al., arXiv 2208.01066) and its fork
`sheepfriend/in-context-learning` (`LowRankTransformerModel`).

A prompt describes V tables with C columns each: per table one table token followed by its C column tokens (V·(C+1)
rows), then a separator and the 2-column query, so its length is L = V·(C+1) + 3.
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


POSITION_EMBEDDING_TYPES = ("low_rank", "dense")
ATTENTION_PATTERNS = ("table", "full")
TABLE_ATTENTION_IMPLEMENTATIONS = ("sparse", "masked")


class LowRankIclConfig(PretrainedConfig):
    r"""
    Args:
        n_dims (`int`, defaults to 5): width of each prompt row's feature vector (the read-in's input width).
        num_tables (`int`, defaults to 20): V, the number of tables of the prompts the model is trained on. The
            low-rank positions and the table masks are defined for any V, so `forward(num_tables=...)` evaluates
            other table counts; the dense positional table only this one.
        num_columns (`int`, defaults to 3): C, columns per table (fixed: the position block and the masks depend on it).
        hidden_size (`int`, defaults to 128): residual width (GPT-2's `n_embd`).
        num_hidden_layers (`int`, defaults to 12): transformer blocks.
        num_attention_heads (`int`, defaults to 4): heads per block.
        intermediate_size (`int`, *optional*): MLP width; `4 * hidden_size` when not given (GPT-2).
        hidden_act (`str`, defaults to `"gelu_new"`): the MLP activation (GPT-2's).
        num_local_layers (`int`, defaults to 2): with `attention_pattern="table"`, the first this many blocks attend
            within each table block (C+1 tokens; the final 3 tokens each see only themselves); the later blocks
            attend only among the last token of each table block and the final 3 tokens (V+3 tokens).
        attention_pattern (`str`, defaults to `"table"`): `"table"` (the layer-specific masks above) or `"full"`
            (every token sees every token, or every earlier one when causal: the dense baseline).
        is_causal (`bool`, defaults to `True`): combine every mask with causality (what the original effectively
            ran: transformers 4.17's GPT-2 always applied its causal mask on top of the custom one).
        position_embedding_type (`str`, defaults to `"low_rank"`): `"low_rank"` (one shared (C+1)×hidden block tiled
            V times plus 3 free rows for the separator and the query: (C+4)·hidden parameters) or `"dense"` (a table
            of `max_position_embeddings` rows, the baseline).
        max_position_embeddings (`int`, *optional*): rows of the dense positional table; `V·(C+1) + 3` when not
            given.
        table_attention_implementation (`str`, defaults to `"sparse"`): how the table masks are computed:
            `"sparse"` (block-diagonal layers as attention over the (V, C+1) blocks, sparse layers over the gathered
            V+3 tokens; no L×L matrix) or `"masked"` (the dense masked reference, L×L scores).
        hidden_dropout (`float`, defaults to 0.0): dropout on the embeddings and the block outputs (GPT-2's
            `resid_pdrop` / `embd_pdrop`).
        attention_dropout (`float`, defaults to 0.0): dropout on the attention probabilities.
        layer_norm_eps (`float`, defaults to 1e-5): LayerNorm epsilon.
        initializer_range (`float`, defaults to 0.02): std of the normal init of the linear layers.
        position_initializer_range (`float`, defaults to 0.02): std of the normal init of the positional embeddings
            (the original's first revision; its last used 1.0, with which neither the dense nor the low-rank model
            learned anything in 1000 steps at V=3 here: the positions drown the read-in features).
    """

    model_type = "hfm_lowrank_icl"

    def __init__(
        self,
        n_dims=5,
        num_tables=20,
        num_columns=3,
        hidden_size=128,
        num_hidden_layers=12,
        num_attention_heads=4,
        intermediate_size=None,
        hidden_act="gelu_new",
        num_local_layers=2,
        attention_pattern="table",
        is_causal=True,
        position_embedding_type="low_rank",
        max_position_embeddings=None,
        table_attention_implementation="sparse",
        hidden_dropout=0.0,
        attention_dropout=0.0,
        layer_norm_eps=1e-5,
        initializer_range=0.02,
        position_initializer_range=0.02,
        **kwargs,
    ):
        self.n_dims = n_dims
        self.num_tables = num_tables
        self.num_columns = num_columns
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size if intermediate_size is not None else 4 * hidden_size
        self.hidden_act = hidden_act
        self.num_local_layers = num_local_layers
        self.attention_pattern = attention_pattern
        self.is_causal = is_causal
        self.position_embedding_type = position_embedding_type
        self.max_position_embeddings = max_position_embeddings
        self.table_attention_implementation = table_attention_implementation
        self.hidden_dropout = hidden_dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.position_initializer_range = position_initializer_range
        kwargs.setdefault(
            "auto_map",
            {
                "AutoConfig": "configuration_lowrank_icl.LowRankIclConfig",
                "AutoModel": "modeling_lowrank_icl.LowRankIclModel",
                "AutoModelForSequenceClassification": "modeling_lowrank_icl.LowRankIclForPromptClassification",
            },
        )
        kwargs.setdefault("id2label", {0: "connected"})  # the one logit: > 0 means connected (y = +1)
        super().__init__(**kwargs)
        if self.max_position_embeddings is None and isinstance(num_tables, int) and isinstance(num_columns, int):
            self.max_position_embeddings = self.prompt_length(num_tables)
        self._validate_lowrank_icl()

    def prompt_length(self, num_tables=None):
        """L = V·(C+1) + 3 for `num_tables` tables (default: the config's V)."""
        num_tables = self.num_tables if num_tables is None else num_tables
        return num_tables * (self.num_columns + 1) + 3

    def _validate_lowrank_icl(self):
        check_finite_numbers(self)
        check_activation(self)
        check_integers(self, ("n_dims", "num_tables", "num_columns", "hidden_size", "num_hidden_layers",
                              "num_attention_heads", "intermediate_size", "max_position_embeddings"))  # fmt: skip
        check_integers(self, ("num_local_layers",), minimum=0)
        if self.num_local_layers > self.num_hidden_layers:
            config_error(self, "num_local_layers", self.num_local_layers,
                         f"must be <= num_hidden_layers={self.num_hidden_layers}")  # fmt: skip
        check_divisible(self, "hidden_size", "num_attention_heads")
        check_choice(self, "attention_pattern", ATTENTION_PATTERNS)
        check_choice(self, "position_embedding_type", POSITION_EMBEDDING_TYPES)
        check_choice(self, "table_attention_implementation", TABLE_ATTENTION_IMPLEMENTATIONS)
        check_flags(self, ("is_causal",))
        if self.position_embedding_type == "dense" and self.max_position_embeddings < self.prompt_length():
            config_error(self, "max_position_embeddings", self.max_position_embeddings,
                         f"must be >= the prompt length V·(C+1)+3 = {self.prompt_length()} of "
                         f"num_tables={self.num_tables}")  # fmt: skip
        check_numbers(self, ("hidden_dropout", "attention_dropout"), "fraction")
        check_numbers(self, ("layer_norm_eps", "initializer_range", "position_initializer_range"), "positive")


__all__ = ["LowRankIclConfig"]
