"""LowRank ICL visualisations: the attention masks of the model's layers as a PNG (matplotlib). Not shipped to the
Hub: no shipped file imports it."""

from .modeling_lowrank_icl import attention_kind, table_attention_mask


def layer_masks(config, num_tables=None):
    """{kind: (L, L) bool mask} of the distinct layer kinds of `config` (in layer order), at `num_tables` tables."""
    num_tables = num_tables or config.num_tables
    masks = {}
    for layer in range(config.num_hidden_layers):
        kind = attention_kind(config, layer)
        if kind not in masks:
            masks[kind] = table_attention_mask(num_tables, config.num_columns, kind, config.is_causal)
    return masks


def plot_masks(config, path, num_tables=None):
    """Draw every distinct layer mask side by side into `path`; returns {kind: density} (the share of allowed pairs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    masks = layer_masks(config, num_tables)
    layers = {
        kind: [i for i in range(config.num_hidden_layers) if attention_kind(config, i) == kind] for kind in masks
    }
    figure, axes = plt.subplots(1, len(masks), figsize=(4.2 * len(masks), 4.4), squeeze=False)
    densities = {}
    for axis, (kind, mask) in zip(axes[0], masks.items(), strict=True):
        densities[kind] = float(mask.float().mean())
        axis.imshow(mask.numpy(), cmap="Greys", interpolation="nearest")
        span = f"layers {layers[kind][0]}-{layers[kind][-1]}" if len(layers[kind]) > 1 else f"layer {layers[kind][0]}"
        axis.set_title(f"{kind} ({span}): {100 * densities[kind]:.2f}%", fontsize=10)
        axis.set_xlabel("key position")
        axis.set_ylabel("query position")
    causal = "causal" if config.is_causal else "bidirectional"
    figure.suptitle(f"V={num_tables or config.num_tables}, C={config.num_columns}, {causal}; black: allowed")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return densities
