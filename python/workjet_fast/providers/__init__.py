"""Provider adapters: every upstream speaks OpenAI's chat format to the rest of the gateway."""

from __future__ import annotations

from workjet_fast.config import ProviderConfig
from workjet_fast.providers.base import Provider, UpstreamFailure, UpstreamStream
from workjet_fast.providers.http import HttpClient

__all__ = ["Provider", "UpstreamFailure", "UpstreamStream", "make_provider"]


def make_provider(config: ProviderConfig) -> Provider:
    """The adapter for a provider's `type`."""
    client = HttpClient(config)
    if config.type == "anthropic":
        from workjet_fast.providers.anthropic import AnthropicProvider

        return AnthropicProvider(config, client)
    from workjet_fast.providers.openai import OpenAIProvider

    return OpenAIProvider(config, client)
