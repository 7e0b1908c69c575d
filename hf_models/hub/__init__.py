"""Publishing machinery: remote-code audit, what a folder's code can do, and isolated loading (export, cards and
uploads build on it)."""

from .capabilities import REFUSED, REPORTED, Finding, pickle_files, scan_folder, scan_source
from .remote_code import (
    audit_folder,
    audit_source,
    run_isolated,
    run_isolated_image_pipeline,
    run_isolated_pipeline,
    shipped_files,
)


__all__ = [
    "REFUSED",
    "REPORTED",
    "Finding",
    "audit_folder",
    "audit_source",
    "pickle_files",
    "run_isolated",
    "run_isolated_image_pipeline",
    "run_isolated_pipeline",
    "scan_folder",
    "scan_source",
    "shipped_files",
]
