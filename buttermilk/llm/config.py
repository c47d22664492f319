"""The options of an LLM agent, as written in a flow config (one key per field)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from buttermilk.llm.images import DEFAULT_MAX_IMAGE_BYTES, ImageFields
from buttermilk.llm.limits import DEFAULT_BURST_SECONDS
from buttermilk.llm.usage import Price


class LLMConfig(BaseModel):
    """Validated agent options; unknown keys are refused, so a typo fails at build time."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    # The endpoint
    model: str = Field(min_length=1, description="Model name, as the endpoint knows it.")
    base_url: str = Field(description="OpenAI-compatible API root, e.g. http://host:11434/v1.")
    api_key_env: str | None = Field(
        default=None,
        description="Name of the environment variable holding the API key (a placeholder "
        "key is sent when it is unset, which local servers accept).",
    )
    timeout: float = Field(default=60.0, gt=0, description="Seconds allowed for one call.")

    # The prompt
    prompt: str | None = Field(default=None, description="User message template (Jinja2).")
    prompt_file: str | None = Field(
        default=None, description="...or a file holding it (relative to the working folder)."
    )
    system: str | None = Field(default=None, description="System message template (Jinja2).")

    # Images (see buttermilk.llm.images)
    images: list[str] = Field(
        default_factory=list,
        description="Record fields holding images to send with the prompt (content, uri, "
        "metadata.KEY; one name or a list): paths, http(s) URLs, data: URIs, bytes or "
        "{bytes, path} objects, or lists of them.",
    )
    image_detail: Literal["auto", "low", "high"] | None = Field(
        default=None, description="The detail asked for each image (default: the server's)."
    )
    max_image_bytes: int = Field(
        default=DEFAULT_MAX_IMAGE_BYTES, ge=1, description="Largest image sent (bytes)."
    )
    image_root: str | None = Field(
        default=None,
        description="Folder that relative image paths are read from (default: the current "
        "folder of the process running the job).",
    )

    # Sampling
    temperature: float | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = None
    extra: dict[str, Any] = Field(
        default_factory=dict, description="More request body fields, sent as they are."
    )

    # The answer
    answer_schema: dict[str, Any] | None = Field(
        default=None, alias="schema", description="JSON Schema the answer must match."
    )
    schema_model: str | None = Field(
        default=None, description="...or the import path of a pydantic model."
    )
    json_mode: bool | None = Field(
        default=None,
        description="Ask for response_format json_object (default: on when a schema is set).",
    )
    schema_instructions: bool = Field(
        default=True, description="Tell the model the schema, in the system message."
    )
    schema_retries: int = Field(
        default=2, ge=0, description="Extra tries when an answer is not valid for the schema."
    )
    schema_feedback: bool = Field(
        default=True, description="On those tries, tell the model what was wrong."
    )

    # Transient failures
    max_retries: int = Field(default=5, ge=0, description="Retries of 429, 5xx, timeouts.")
    backoff: float = Field(default=1.0, gt=0, description="First wait (s); doubles per retry.")
    max_backoff: float = Field(default=60.0, ge=0, description="Longest single wait (s).")

    keep_messages: bool = Field(
        default=True,
        description="Keep the messages sent (system and user, as rendered for the record) in "
        "the output under 'messages', so every job shows exactly what the model was asked.",
    )

    # Sharing and accounting
    cache: bool = Field(
        default=False,
        description="Reuse answers to identical requests of the same repeat: in a batch, "
        "those stored by any worker of the batch store in any batch; elsewhere, this process's.",
    )
    price: Price | None = Field(
        default=None,
        description="USD per 1M tokens of this model: {input, output, cached_input}.",
    )
    prices: dict[str, Price] = Field(
        default_factory=dict,
        description="USD per 1M tokens by model name (e.g. ${llm.prices}, the table of "
        "conf/llm_prices.yaml); price wins over it. The model as configured is looked up "
        "first, then the model the server reports.",
    )
    requests_per_minute: float | None = Field(
        default=None,
        gt=0,
        validation_alias=AliasChoices("requests_per_minute", "rpm"),
        description="Pace calls to this model at this endpoint (alias rpm): in a batch, "
        "every worker of the batch store together; elsewhere, this process.",
    )
    tokens_per_minute: float | None = Field(
        default=None,
        gt=0,
        validation_alias=AliasChoices("tokens_per_minute", "tpm"),
        description="Pace tokens, estimated before a call and corrected by its usage "
        "(alias tpm); shared like requests_per_minute.",
    )
    rate_burst: float = Field(
        default=DEFAULT_BURST_SECONDS,
        gt=0,
        description="Seconds' worth of those rates that may go out at once after a quiet "
        "spell (the token buckets' size; at least one request).",
    )

    @field_validator("images", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")

    def price_of(self, reported_model: str | None, prices: Mapping[str, Price]) -> Price | None:
        """The price of calls: ``price``, else ``prices``' for the configured model, else
        theirs for the model the server reported (None when none is known)."""
        if self.price is not None:
            return self.price
        found = prices.get(self.model)
        if found is None and reported_model:
            found = prices.get(reported_model)
        return found

    def image_fields(self) -> ImageFields:
        """Where records hold the images sent, and how (raises UsageError for a field name
        that is not one of a record's)."""
        return ImageFields(
            tuple(self.images), self.image_detail, self.max_image_bytes, self.image_root
        )

    def sampling(self) -> dict[str, Any]:
        """The request fields that shape an answer besides the messages (set ones only)."""
        found = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "seed": self.seed,
        }
        return {key: value for key, value in found.items() if value is not None}
