"""tokenledger: shared domain package (wire schema, token counting, pricing, money)."""

__version__ = "0.1.0"
