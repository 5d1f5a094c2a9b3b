"""Versioned wire schema shared by producers and stream jobs."""

from tokenledger.schema.v1 import (
    EVENT_TYPE_V1,
    LABEL_MAX_LEN,
    MAX_TOKENS,
    Labels,
    UsageDataV1,
    UsageEventV1,
)

__all__ = ["EVENT_TYPE_V1", "LABEL_MAX_LEN", "MAX_TOKENS", "Labels", "UsageDataV1", "UsageEventV1"]
