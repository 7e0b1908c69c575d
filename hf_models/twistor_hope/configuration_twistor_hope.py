"""Configuration of Twistor-HOPE: Möbius-Twistor components inside a HOPE / Nested-Learning recurrent language model.

Tokens are twistors Z = (ω, π): two complex vectors of `hidden_size / 2` numbers each, stored as [real | imag] halves,
so a twistor is laid out as [ω_re | ω_im | π_re | π_im], `2 * hidden_size` real numbers wide (the "twistor width").

This file is shipped to the Hub next to the weights: it imports nothing but `transformers` and the shared checks
beside it (which import no torch).
"""

from transformers import PretrainedConfig

from .shared_config_checks import (
    check_activation,
    check_choice,
    check_finite_numbers,
    check_flags,
    check_integers,
    check_numbers,
    config_error,
)


CONSTRAINT_TYPES = ("incidence", "learned")
RECURRENT_IMPLEMENTATIONS = ("fused", "reference")


class TwistorHopeConfig(PretrainedConfig):
    r"""Configuration of a Twistor-HOPE model (`TwistorHopeModel`, `TwistorHopeForCausalLM`,
    `TwistorHopeForSequenceClassification`).

    The backbone, in order: spinor embedding (width `2 * hidden_size`) -> one self-modifying recurrent block
    (`num_recurrent_layers` gated twistor cells, an adaptive Möbius layer, a feed-forward layer, each residual) ->
    continuum memory (`num_memories` slots) -> nested learning (`num_nested_levels` gated levels) -> a projection to
    `hidden_size` and a LayerNorm. The causal LM adds an LM head; its loss is the cross-entropy plus the weighted
    constraint loss of the nested levels (both reported).

    Args:
        vocab_size (`int`, defaults to 1000): number of token ids.
        hidden_size (`int`, defaults to 128): the original's `dim`: width of the backbone's output; the twistor stream
            is `2 * hidden_size` wide (ω and π, each `hidden_size / 2` complex numbers as [re | im]). Must be
            divisible by 4.
        recurrent_hidden_size (`int`, *optional*): state width of each twistor cell; defaults to the twistor width
            `2 * hidden_size` (as the original). Must be even (ω and π halves).
        num_recurrent_layers (`int`, defaults to 2): stacked twistor cells.
        bidirectional (`bool`, defaults to `False`): run every cell layer in both directions (an encoder for
            `TwistorHopeModel` / `TwistorHopeForSequenceClassification`; the backward cell reads the previous
            layer's output, aligned by position). The causal LM refuses it.
        num_mobius_cycles (`int`, defaults to 3): K, the Möbius mixing cycles inside each cell (coupling
            `mobius_coupling * (k + 1) / K` in cycle k).
        mobius_coupling (`float`, defaults to 0.1): c of the cell's Möbius mixing.
        adaptive_mobius_cycles (`int`, defaults to 3): twist cycles of the adaptive Möbius layer.
        adaptive_coupling_base (`float`, defaults to 0.1): base coupling of the adaptive Möbius layer.
        adaptive_range_init (`float`, defaults to 0.2): initial learnable range ρ of the adaptive coupling.
        use_adaptive_evolution_rate (`bool`, defaults to `True`): evolution rate 0.001 + 0.099 σ(MLP([cell, h]))
            instead of one learnable rate.
        use_multiscale_evolution (`bool`, defaults to `True`): three evolution networks (fast / medium / slow) mixed
            by softmax weights instead of one.
        num_memories (`int`, defaults to 3): continuum-memory slots per sequence.
        memory_update_periods (`list[int]`, *optional*): update period of each slot in tokens (slot k is written
            once every `memory_update_periods[k]` tokens with the gated mean of those tokens); defaults to
            `4 ** k` (1, 4, 16, ...).
        memory_update_rate (`float`, defaults to 0.1): base write rate of the memory (times the slot's mean gate).
        num_memory_cycles (`int`, defaults to 2): Möbius layers applied to the memory before it is read.
        use_phase_compression (`bool`, defaults to `True`): read the memory through a linear bottleneck of
            `phase_compression_ratio` times the twistor width.
        phase_compression_ratio (`float`, defaults to 0.5): width ratio of that bottleneck.
        use_nested_learning (`bool`, defaults to `True`): the nested levels and their constraint loss.
        num_nested_levels (`int`, defaults to 5): L, nested levels (ω and π refined by their own MLPs, gated
            residuals).
        constraint_type (`str`, defaults to `"incidence"`): the constraint loss. `"incidence"`: the incidence relation
            the original describes, ω·π* + π·ω* = 0, as the mean squared cosine between ω and π (as real vectors) of
            each level's output. `"learned"`: the original's learned critics (mean |g([ω, π])| of an MLP g), which
            the critics can drive to 0 by themselves (kept for comparison).
        constraint_weight (`float`, defaults to 0.1): weight of the final level's constraint.
        use_level_constraints (`bool`, defaults to `True`): also constrain the L - 1 intermediate levels.
        level_constraint_weights (`list[float]`, defaults to `[0.005, 0.05]`): weight of each intermediate level's
            constraint at the start and the end of training; in between it follows the training progress (set by
            `TwistorHopeForCausalLM.set_training_progress`, which the nested-learning Trainer callback calls). A
            model used outside a training run has progress 1 (the end weight).
        nested_lr_decay (`float`, defaults to 0.9): level-wise learning rates of nested training: level l's
            parameters train at `learning_rate * nested_lr_decay ** l` (see `nested_parameter_groups`).
        faithful_train_scaling (`bool`, defaults to `False`): the original's training-only rescaling
            x * (1 + 0.1 σ(w)) after the recurrent block (a train/eval mismatch of about x1.05); off by default.
        intermediate_size (`int`, *optional*): feed-forward width; defaults to 4 times the twistor width.
        hidden_act (`str`, defaults to `"gelu"`): activation of the feed-forward and the small MLPs.
        hidden_dropout (`float`, defaults to 0.1): dropout between cell layers and on the feed-forward output.
        max_position_embeddings (`int`, defaults to 8192): the longest sequence (cache included) the model accepts.
            The spinor phase is computed for every position (no cut-off); this bounds only the inputs.
        phase_period (`int`, *optional*): the spinor phase of position t is that of t mod `phase_period` (None: of t,
            the original). A model trained on blocks of L tokens has never seen the phases of positions >= L; with
            `phase_period` = L it reads every later position with phases it has seen (the recurrence itself has no
            length limit).
        recurrent_implementation (`str`, defaults to `"fused"`): `"fused"` hoists everything that does not depend on
            the previous state out of the time loop; `"reference"` is the readable per-step form (the original's
            loop structure), kept as the reference the fused path is tested against.
        layer_norm_eps (`float`, defaults to 1e-5), initializer_range (`float`, defaults to 0.02).
        use_cache (`bool`, defaults to `True`): return the recurrent state (`TwistorHopeCache`) for generation.
        tie_word_embeddings (`bool`, defaults to `False`).
    """

    model_type = "hfm_twistor_hope"
    keys_to_ignore_at_inference = ["cache", "past_key_values", "constraint_loss", "lm_loss"]

    def __init__(
        self,
        vocab_size=1000,
        hidden_size=128,
        recurrent_hidden_size=None,
        num_recurrent_layers=2,
        bidirectional=False,
        num_mobius_cycles=3,
        mobius_coupling=0.1,
        adaptive_mobius_cycles=3,
        adaptive_coupling_base=0.1,
        adaptive_range_init=0.2,
        use_adaptive_evolution_rate=True,
        use_multiscale_evolution=True,
        num_memories=3,
        memory_update_periods=None,
        memory_update_rate=0.1,
        num_memory_cycles=2,
        use_phase_compression=True,
        phase_compression_ratio=0.5,
        use_nested_learning=True,
        num_nested_levels=5,
        constraint_type="incidence",
        constraint_weight=0.1,
        use_level_constraints=True,
        level_constraint_weights=(0.005, 0.05),
        nested_lr_decay=0.9,
        faithful_train_scaling=False,
        intermediate_size=None,
        hidden_act="gelu",
        hidden_dropout=0.1,
        max_position_embeddings=8192,
        phase_period=None,
        recurrent_implementation="fused",
        layer_norm_eps=1e-5,
        initializer_range=0.02,
        use_cache=True,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=False,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.recurrent_hidden_size = recurrent_hidden_size if recurrent_hidden_size is not None else 2 * hidden_size
        self.num_recurrent_layers = num_recurrent_layers
        self.bidirectional = bidirectional
        self.num_mobius_cycles = num_mobius_cycles
        self.mobius_coupling = mobius_coupling
        self.adaptive_mobius_cycles = adaptive_mobius_cycles
        self.adaptive_coupling_base = adaptive_coupling_base
        self.adaptive_range_init = adaptive_range_init
        self.use_adaptive_evolution_rate = use_adaptive_evolution_rate
        self.use_multiscale_evolution = use_multiscale_evolution
        self.num_memories = num_memories
        if memory_update_periods is None and isinstance(num_memories, int) and not isinstance(num_memories, bool):
            memory_update_periods = [4**k for k in range(max(num_memories, 0))]
        self.memory_update_periods = list(memory_update_periods) if memory_update_periods is not None else None
        self.memory_update_rate = memory_update_rate
        self.num_memory_cycles = num_memory_cycles
        self.use_phase_compression = use_phase_compression
        self.phase_compression_ratio = phase_compression_ratio
        self.use_nested_learning = use_nested_learning
        self.num_nested_levels = num_nested_levels
        self.constraint_type = constraint_type
        self.constraint_weight = constraint_weight
        self.use_level_constraints = use_level_constraints
        self.level_constraint_weights = list(level_constraint_weights)
        self.nested_lr_decay = nested_lr_decay
        self.faithful_train_scaling = faithful_train_scaling
        self.intermediate_size = intermediate_size if intermediate_size is not None else 8 * hidden_size
        self.hidden_act = hidden_act
        self.hidden_dropout = hidden_dropout
        self.max_position_embeddings = max_position_embeddings
        self.phase_period = phase_period
        self.recurrent_implementation = recurrent_implementation
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        kwargs.setdefault(
            "auto_map",
            {
                "AutoConfig": "configuration_twistor_hope.TwistorHopeConfig",
                "AutoModel": "modeling_twistor_hope.TwistorHopeModel",
                "AutoModelForCausalLM": "modeling_twistor_hope.TwistorHopeForCausalLM",
                "AutoModelForSequenceClassification": "modeling_twistor_hope.TwistorHopeForSequenceClassification",
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
        self._validate_twistor_hope()

    @property
    def twistor_size(self):
        """Width of the twistor stream, [ω_re | ω_im | π_re | π_im]: `2 * hidden_size`."""
        return 2 * self.hidden_size

    def _validate_twistor_hope(self):
        check_finite_numbers(self)
        check_activation(self)
        check_integers(self, ("hidden_size", "recurrent_hidden_size", "num_recurrent_layers",
                              "intermediate_size", "max_position_embeddings", "num_mobius_cycles",
                              "adaptive_mobius_cycles", "num_memory_cycles"))  # fmt: skip
        check_integers(self, ("num_memories",), minimum=0)
        if self.phase_period is not None:
            check_integers(self, ("phase_period",))
        check_integers(self, ("num_nested_levels",), minimum=0 if not self.use_nested_learning else 1)
        if self.hidden_size % 4:
            config_error(self, "hidden_size", self.hidden_size,
                         "must be divisible by 4 (ω and π, each [real | imag] halves)")  # fmt: skip
        if self.recurrent_hidden_size % 2:
            config_error(self, "recurrent_hidden_size", self.recurrent_hidden_size, "must be even (ω and π halves)")
        periods = self.memory_update_periods
        if (
            not isinstance(periods, list)
            or len(periods) != self.num_memories
            or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in periods)
        ):
            config_error(self, "memory_update_periods", periods,
                         f"must be {self.num_memories} integers >= 1 (one per memory slot)")  # fmt: skip
        check_choice(self, "constraint_type", CONSTRAINT_TYPES)
        check_choice(self, "recurrent_implementation", RECURRENT_IMPLEMENTATIONS)
        weights = self.level_constraint_weights
        if len(weights) != 2 or any(isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 for w in weights):
            config_error(self, "level_constraint_weights", weights,
                         "must be two numbers >= 0 (start and end of training)")  # fmt: skip
        check_numbers(self, ("mobius_coupling", "adaptive_coupling_base", "adaptive_range_init", "constraint_weight",
                             "memory_update_rate", "initializer_range"), "non_negative")  # fmt: skip
        if not 0 < self.memory_update_rate <= 1:
            config_error(self, "memory_update_rate", self.memory_update_rate, "must be in (0, 1]")
        check_numbers(self, ("nested_lr_decay", "phase_compression_ratio"), "positive")
        if not 0 < self.nested_lr_decay <= 1:
            config_error(self, "nested_lr_decay", self.nested_lr_decay, "must be in (0, 1]")
        if not 0 < self.phase_compression_ratio <= 1 or int(self.twistor_size * self.phase_compression_ratio) < 1:
            config_error(self, "phase_compression_ratio", self.phase_compression_ratio,
                         "must be in (0, 1] and keep >= 1 unit")  # fmt: skip
        check_numbers(self, ("hidden_dropout",), "fraction")
        check_numbers(self, ("layer_norm_eps",), "positive")
        check_flags(self, ("bidirectional", "use_adaptive_evolution_rate", "use_multiscale_evolution",
                           "use_phase_compression", "use_nested_learning", "use_level_constraints",
                           "faithful_train_scaling"))  # fmt: skip


__all__ = ["TwistorHopeConfig"]
