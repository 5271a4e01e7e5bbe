"""Language-model and embedding providers: offline (default) and Anthropic."""

from __future__ import annotations

from providers.base import DraftAnswer, Passage, Provider, Usage, Verdict
from providers.offline import OfflineProvider
from schemas.errors import InvalidInputError

__all__ = [
    "PROVIDERS",
    "DraftAnswer",
    "OfflineProvider",
    "Passage",
    "Provider",
    "Usage",
    "Verdict",
    "make_provider",
]

PROVIDERS = ("offline", "anthropic")


def make_provider(name: str, *, model: str | None = None) -> Provider:
    """The provider called ``name``; the Anthropic key comes from ``ANTHROPIC_API_KEY`` only."""
    if name == "offline":
        return OfflineProvider()
    if name == "anthropic":
        from providers.anthropic import AnthropicProvider  # noqa: PLC0415 - optional weight

        return AnthropicProvider(model=model) if model else AnthropicProvider()
    raise InvalidInputError(f"unknown provider {name!r}", hint=f"use one of {', '.join(PROVIDERS)}")
