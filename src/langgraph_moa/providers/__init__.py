"""Model providers: model specs, the provider table, and building chat models lazily.

What the package knows about a provider (its key variable, how to switch off client retries,
which errors are worth retrying, where its finish reason is) is read from here and nowhere else.
"""

from langgraph_moa.providers._table import (
    Provider,
    providers,
    register_provider,
    unregister_provider,
)

__all__ = ["Provider", "providers", "register_provider", "unregister_provider"]
