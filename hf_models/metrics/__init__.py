"""Metrics through `evaluate`, from local metric modules so that they load offline."""

from pathlib import Path


METRICS = Path(__file__).resolve().parent


def load_metric(name):
    """`evaluate.load` of the metric module `hf_models/metrics/<name>/` (offline-safe)."""
    import evaluate

    folder = METRICS / name
    if not (folder / f"{name}.py").exists():
        raise ValueError(f"no local metric module {name!r} in {METRICS}")
    return evaluate.load(str(folder))
