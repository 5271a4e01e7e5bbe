"""Language-model and embedding providers: offline (default), Anthropic, OpenAI-compatible
(OpenAI, Azure OpenAI, vLLM, SGLang, Ollama, llama.cpp's server) and a local GGUF model."""

from __future__ import annotations

from pathlib import Path

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

PROVIDERS = ("offline", "anthropic", "openai", "azure", "local")


def make_provider(name: str, *, model: str | None = None) -> Provider:
    """The provider called ``name``, configured from the environment (keys never come from
    anywhere else): ``ANTHROPIC_API_KEY``; ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``; the
    ``AZURE_OPENAI_*`` variables; ``RAGC_LOCAL_MODEL`` and ``RAGC_LOCAL_STAGES``."""
    if name == "offline":
        return OfflineProvider()
    if name == "anthropic":
        from providers.anthropic import AnthropicProvider  # noqa: PLC0415 - optional weight

        return AnthropicProvider(model=model) if model else AnthropicProvider()
    if name == "openai":
        from providers.openai import OpenAIProvider  # noqa: PLC0415 - optional weight

        return OpenAIProvider(model=model)
    if name == "azure":
        from providers.openai import azure_provider  # noqa: PLC0415 - optional weight

        return azure_provider(model=model)
    if name == "local":
        from providers.local import LocalProvider  # noqa: PLC0415 - optional weight

        return LocalProvider(model_path=Path(model)) if model else LocalProvider()
    raise InvalidInputError(f"unknown provider {name!r}", hint=f"use one of {', '.join(PROVIDERS)}")
