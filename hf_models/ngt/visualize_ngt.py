"""NGT visualisations: the final-layer coordinates of a trained model as a 3-D PCA (plotly). Not shipped to the Hub:
no shipped file imports it."""

import torch


@torch.no_grad()
def ngt_coordinates(model, tokenizer, text):
    """Final-layer coordinates of an NGT for `text`, projected to 3-D by PCA.

    Returns `(points, masses, tokens, explained)`: (L, 3) principal components, (L,) masses, the L token strings and
    the share of variance the 3 components explain.
    """
    if getattr(model.config, "model_type", None) != "hfm_ngt":
        raise ValueError(
            f"coordinates exist only for NGT models (model_type hfm_ngt); got {model.config.model_type!r}"
        )
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    limit = model.config.max_position_embeddings
    if ids.shape[1] < 4:
        raise ValueError(f"the text has {ids.shape[1]} tokens; at least 4 are needed for a 3-D projection")
    ids = ids[:, :limit]
    base = getattr(model, model.base_model_prefix, model)
    output = base(input_ids=ids, use_cache=False)
    coords = output.coordinates[0].float()  # (L, Z)
    centered = coords - coords.mean(0, keepdim=True)
    _, singular, basis = torch.linalg.svd(centered, full_matrices=False)
    points = centered @ basis[:3].T  # (L, 3)
    explained = float((singular[:3] ** 2).sum() / (singular**2).sum())
    tokens = [tokenizer.decode([token]) for token in ids[0].tolist()]
    return points, output.masses[0].float(), tokens, explained


def coordinates_html(model, tokenizer, text, path, title="NGT coordinates"):
    """An interactive plotly 3-D scatter of the coordinates (point size and colour by mass), written to `path`
    with plotly.js embedded so it opens offline."""
    try:
        import plotly.graph_objects as go
    except ImportError as error:
        raise ValueError("the coordinate plot needs plotly: pip install plotly (or hf-models[viz])") from error
    points, masses, tokens, explained = ngt_coordinates(model, tokenizer, text)
    sizes = 4 + 16 * (masses - masses.min()) / (masses.max() - masses.min() + 1e-9)
    labels = [
        f"{i}: {token!r} (mass {mass:.3f})"
        for i, (token, mass) in enumerate(zip(tokens, masses.tolist(), strict=True))
    ]
    figure = go.Figure(
        go.Scatter3d(
            x=points[:, 0].tolist(), y=points[:, 1].tolist(), z=points[:, 2].tolist(), mode="markers",
            marker={"size": sizes.tolist(), "color": masses.tolist(), "colorscale": "Viridis",
                    "colorbar": {"title": "mass"}},
            text=labels, hoverinfo="text",
        )
    )  # fmt: skip
    figure.update_layout(title=f"{title} (PCA, {explained:.0%} of the variance)")
    figure.write_html(str(path), include_plotlyjs=True)
    return path
