"""Training machinery shared by every architecture."""

from .precision import bf16_is_fast, describe_host, host_info, host_kind


__all__ = ["bf16_is_fast", "describe_host", "host_info", "host_kind"]
