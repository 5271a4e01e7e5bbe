"""The OpenAI-compatible provider: each compile stage as one Chat Completions call.

One provider speaks to every server of the Chat Completions API through the official ``openai``
SDK: OpenAI itself, Azure OpenAI (:func:`azure_provider`), and the self-hosted vLLM, SGLang,
Ollama and llama.cpp servers (``OPENAI_BASE_URL``). Each call sends one system message, the
knowledge (passages or the L3 context) first and the stage's instructions after it, then the
question as the user message: the prompt prefix stays the same across stages over the same
passages, which is what automatic prefix caching (OpenAI, vLLM, SGLang, llama.cpp) reuses. The
cached share is counted from ``usage.prompt_tokens_details.cached_tokens``.

Replies are constrained where the server can: ``response_format`` ``json_schema`` (strict) by
default, ``json_object`` or ``text`` by choice (``RAGC_OPENAI_RESPONSE_FORMAT``); a server that
rejects the format with HTTP 400 naming it is asked again one step plainer until it accepts,
and the provider keeps the plainer format. Whatever comes back goes through the same strict
parsers as every provider. Retries and timeouts are the SDK's own (429, 408, 409, 5xx and dropped
connections, honouring ``retry-after``); what fails through them is
:class:`ProviderUnavailableError`, anything else :class:`ProviderError`.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Final, Literal, cast, get_args

import openai
from openai.types.chat import ChatCompletionMessageParam

from providers import _prompts as prompts
from providers._chat import (
    ChatProvider,
    Prompt,
    ProviderError,
    ProviderUnavailableError,
)
from schemas.errors import InvalidInputError

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_MODEL",
    "FORMAT_ENV",
    "MODEL_ENV",
    "OpenAIProvider",
    "ResponseFormat",
    "azure_provider",
]

ResponseFormat = Literal["json_schema", "json_object", "text"]
DEFAULT_MODEL: Final = "gpt-5.4-mini"
"""A current small model; ``RAGC_OPENAI_MODEL`` or ``--model`` choose another."""
API_KEY_ENV: Final = "OPENAI_API_KEY"
BASE_URL_ENV: Final = "OPENAI_BASE_URL"
MODEL_ENV: Final = "RAGC_OPENAI_MODEL"
FORMAT_ENV: Final = "RAGC_OPENAI_RESPONSE_FORMAT"
AZURE_KEY_ENV: Final = "AZURE_OPENAI_API_KEY"
AZURE_ENDPOINT_ENV: Final = "AZURE_OPENAI_ENDPOINT"
AZURE_DEPLOYMENT_ENV: Final = "RAGC_AZURE_DEPLOYMENT"
AZURE_VERSION_ENV: Final = "OPENAI_API_VERSION"
AZURE_DEFAULT_VERSION: Final = "2024-10-21"
LOCAL_SERVER_KEY: Final = "not-needed"
"""The key sent to a self-hosted server (``OPENAI_BASE_URL`` set) when none is configured."""
_PLAINER: Final[dict[ResponseFormat, ResponseFormat]] = {
    "json_schema": "json_object",
    "json_object": "text",
}
_UNAVAILABLE = (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError)


class OpenAIProvider(ChatProvider):
    """A :class:`providers.base.Provider` over any OpenAI-compatible Chat Completions API.

    Pass ``client`` to reuse an ``openai.OpenAI`` (or ``AzureOpenAI``); the provider then never
    closes it (unless ``owns_client``: it was built for this provider alone) and
    ``api_key``/``base_url`` must be left unset. Otherwise one is built from them
    or from ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` and closed by :meth:`close`; a base URL
    without a key is a self-hosted server, sent a placeholder key. ``max_retries`` and
    ``timeout`` go to the SDK.
    """

    def __init__(
        self,
        *,
        client: openai.OpenAI | None = None,
        model: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int = 4,
        timeout: float = 120.0,
        response_format: ResponseFormat | None = None,
        name: str = "openai",
        owns_client: bool = False,
    ) -> None:
        super().__init__()
        if max_retries < 0:
            raise InvalidInputError(f"max_retries must be >= 0, got {max_retries}")
        self.name = name
        self.model = model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL
        self._format = _response_format(response_format)
        self._format_lock = threading.Lock()
        if client is None:
            url = base_url or os.environ.get(BASE_URL_ENV) or None
            key = api_key or os.environ.get(API_KEY_ENV) or (LOCAL_SERVER_KEY if url else None)
            if not key:
                raise ProviderError(
                    f"no OpenAI API key: {API_KEY_ENV} is not set",
                    hint=(
                        f"export {API_KEY_ENV}=..., or {BASE_URL_ENV}=http://host:port/v1 "
                        "for a self-hosted server"
                    ),
                )
            self._client = openai.OpenAI(
                api_key=key, base_url=url, max_retries=max_retries, timeout=timeout
            )
            self._opened = self._client
        elif api_key is not None or base_url is not None:
            raise InvalidInputError("pass either client= or api_key=/base_url=, not both")
        else:
            self._client = client.with_options(max_retries=max_retries, timeout=timeout)
            if owns_client:
                self._opened = self._client

    @property
    def response_format(self) -> ResponseFormat:
        """The reply format the provider asks for now (it only ever gets plainer)."""
        return self._format

    def _complete(self, prompt: Prompt) -> str:
        """One Chat Completions call (the SDK retries); the reply's text, usage recorded."""
        stage = prompt.stage
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": prompt.request},
        ]
        fmt = self._format
        while True:
            try:
                completion = self._client.chat.completions.create(
                    model=self.model,
                    messages=messages,
                    max_completion_tokens=prompt.budget,
                    **_format_arguments(stage, fmt),
                )
                break
            except openai.BadRequestError as exc:
                refused = fmt in _PLAINER and "response_format" in f"{exc} {exc.body}"
                if not refused or stage not in prompts.REPLY_SCHEMAS:
                    raise self._permanent(stage, exc) from exc
                fmt = self._downgrade(fmt)
            except _UNAVAILABLE as exc:
                raise ProviderUnavailableError(
                    f"{self.name} {stage} call failed through the SDK's retries: {_describe(exc)}",
                    stage=stage,
                    status=getattr(exc, "status_code", None),
                ) from exc
            except openai.APIError as exc:
                raise self._permanent(stage, exc) from exc
        usage = completion.usage
        if usage is not None:
            details = usage.prompt_tokens_details
            cached = (details.cached_tokens or 0) if details is not None else 0
            self._record(
                stage,
                input_tokens=usage.prompt_tokens - cached,
                output_tokens=usage.completion_tokens,
                cache_read=cached,
            )
        else:
            self._record(stage, input_tokens=0, output_tokens=0)
        if not completion.choices:
            raise ProviderError(f"{self.name} {stage} reply has no choices", stage=stage)
        return completion.choices[0].message.content or ""

    def _downgrade(self, refused: ResponseFormat) -> ResponseFormat:
        """The next plainer format, asked for from now on (the server refused ``refused``)."""
        plainer = _PLAINER[refused]
        with self._format_lock:
            if self._format == refused:
                self._format = plainer
        return plainer

    def _permanent(self, stage: str, exc: openai.APIError) -> ProviderError:
        status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
        hint = None
        if status in (401, 403):
            hint = f"check {API_KEY_ENV} (or {AZURE_KEY_ENV} for Azure)"
        elif status == 404:
            hint = f"check the model name {self.model!r} and the base URL"
        return ProviderError(
            f"{self.name} {stage} call failed: {_describe(exc)}",
            stage=stage,
            status=status,
            hint=hint,
        )


def azure_provider(
    *, model: str | None = None, max_retries: int = 4, timeout: float = 120.0
) -> OpenAIProvider:
    """An :class:`OpenAIProvider` on Azure OpenAI, configured from the environment only:
    ``AZURE_OPENAI_API_KEY``, ``AZURE_OPENAI_ENDPOINT``, ``OPENAI_API_VERSION`` (default
    :data:`AZURE_DEFAULT_VERSION`) and the deployment in ``model`` or ``RAGC_AZURE_DEPLOYMENT``."""
    missing = [v for v in (AZURE_KEY_ENV, AZURE_ENDPOINT_ENV) if not os.environ.get(v)]
    deployment = model or os.environ.get(AZURE_DEPLOYMENT_ENV)
    if not deployment:
        missing.append(AZURE_DEPLOYMENT_ENV)
    if missing:
        raise ProviderError(
            f"Azure OpenAI is not configured: {', '.join(missing)} not set",
            hint="export them (the deployment may also be given with --model)",
        )
    client = openai.AzureOpenAI(
        api_key=os.environ[AZURE_KEY_ENV],
        azure_endpoint=os.environ[AZURE_ENDPOINT_ENV],
        api_version=os.environ.get(AZURE_VERSION_ENV) or AZURE_DEFAULT_VERSION,
        max_retries=max_retries,
        timeout=timeout,
    )
    return OpenAIProvider(
        client=client,
        model=deployment,
        max_retries=max_retries,
        timeout=timeout,
        name="azure",
        owns_client=True,
    )


def _response_format(value: str | None) -> ResponseFormat:
    chosen = value or os.environ.get(FORMAT_ENV) or "json_schema"
    allowed = get_args(ResponseFormat)
    if chosen not in allowed:
        raise InvalidInputError(
            f"unknown response format {chosen!r}",
            hint=f"set {FORMAT_ENV} to one of {', '.join(allowed)}",
        )
    return cast("ResponseFormat", chosen)


def _format_arguments(stage: str, fmt: ResponseFormat) -> dict[str, Any]:
    """The ``response_format`` argument for ``stage`` (none for plain-text stages)."""
    schema = prompts.REPLY_SCHEMAS.get(stage)
    if schema is None or fmt == "text":
        return {}
    if fmt == "json_object":
        return {"response_format": {"type": "json_object"}}
    return {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": f"ragc_{stage}", "schema": schema, "strict": True},
        }
    }


def _describe(exc: openai.APIError) -> str:
    if isinstance(exc, openai.APIStatusError):
        detail = exc.message or exc.response.reason_phrase
        return f"HTTP {exc.status_code}" + (f" ({detail})" if detail else "")
    return f"{type(exc).__name__}: {exc.message}"
