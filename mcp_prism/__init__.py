"""mcp_prism: route each AI task to the cheapest model that does it well, and prove it."""

from mcp_prism.errors import ConfigError, InvalidInput, PrismError, StoreError, UnknownName, UnpricedModel

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "InvalidInput",
    "PrismError",
    "StoreError",
    "UnknownName",
    "UnpricedModel",
    "__version__",
]
