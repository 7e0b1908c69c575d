"""Publishing machinery: remote-code audit and isolated loading (export, cards and uploads build on it)."""

from .remote_code import (
    audit_folder,
    audit_source,
    run_isolated,
    run_isolated_image_pipeline,
    run_isolated_pipeline,
    shipped_files,
)


__all__ = [
    "audit_folder",
    "audit_source",
    "run_isolated",
    "run_isolated_image_pipeline",
    "run_isolated_pipeline",
    "shipped_files",
]
