"""Training machinery shared by every architecture."""

from .precision import bf16_is_fast, describe_host, host_info


__all__ = ["bf16_is_fast", "describe_host", "host_info"]
