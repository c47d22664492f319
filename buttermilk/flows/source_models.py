"""Typed shapes of a flow's data sources: one model per ``type:`` (file, text, sql,
huggingface, batch), told apart by that field (``type: file`` when it is left out).

Every kind has ``columns`` (record field -> source field), ``id_prefix`` and ``where``
(keep only rows whose fields equal a value, or one of a list of values).
"""

from __future__ import annotations

import codecs
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_serializer,
    field_validator,
)

from buttermilk.values import refuse_non_finite

FileFormat = Literal["jsonl", "json", "csv", "parquet"]
RECORD_FIELDS = ("record_id", "content", "uri", "ground_truth")
DEFAULT_TIMEOUT = 30.0  # seconds a source's server may take to connect or to answer
SOURCE_TYPES = ("file", "text", "sql", "huggingface", "batch")


def check_encoding(value: str) -> str:
    """``value`` when it names a Python text codec; ValueError otherwise."""
    try:
        info = codecs.lookup(value)
    except LookupError:
        info = None
    # Codecs such as base64, zlib and rot13 turn bytes into bytes (or text into text):
    # not a way to read a text file.
    if info is None or not getattr(info, "_is_text_encoding", True):
        raise ValueError(
            f"{'unknown' if info is None else 'not a text'} encoding {value!r}: use a "
            "Python text codec name such as utf-8, cp1252, latin-1 or utf-16"
        )
    return value


class SourceBase(BaseModel):
    """What every kind of source has."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Record field -> source field, e.g. {record_id: id, content: text}.",
    )
    id_prefix: str = Field(
        default="", description="Prepended to every record id, to keep ids of sources apart."
    )
    where: dict[str, Any] = Field(
        default_factory=dict,
        description="Keep only rows whose field (a dotted path into nested objects) equals "
        "the value, or one of a list of values: {lang: en, label: [toxic, hate]}. Values "
        "compare as the source holds them (CSV values are text).",
    )

    @field_validator("columns")
    @classmethod
    def _known_record_fields(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(RECORD_FIELDS))
        if unknown:
            allowed = ", ".join(RECORD_FIELDS)
            raise ValueError(f"unknown record field(s) {unknown}: columns may map {allowed}")
        return value

    @field_validator("where")
    @classmethod
    def _plain_values(cls, value: dict[str, Any]) -> dict[str, Any]:
        refuse_non_finite(value, "where")
        for key, wanted in value.items():
            if not key or any(not part for part in key.split(".")):
                raise ValueError(f"where: {key!r} is not a field path (NAME or NAME.KEY)")
            if isinstance(wanted, dict) or (
                isinstance(wanted, list) and any(isinstance(v, dict | list) for v in wanted)
            ):
                raise ValueError(
                    f"where.{key}: give a value or a list of values (text, numbers, "
                    "booleans, null), not an object"
                )
        return value


class PathSource(SourceBase):
    """What sources read from files at a path or URL share: the path (its password never
    stored), the text encoding and how long a server may take."""

    path: str
    encoding: str = "utf-8"
    timeout: float = Field(
        default=DEFAULT_TIMEOUT,
        gt=0,
        allow_inf_nan=False,
        description="Seconds a server (an http(s) URL, a database) may take to connect "
        "or to answer before the source is unavailable (exit 1).",
    )

    @field_serializer("path")
    def _no_password(self, path: str) -> str:
        """A batch's flow snapshot keeps a URL without its password."""
        from buttermilk.flows.location_errors import shown_url

        return shown_url(path)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        return check_encoding(value)


class FileSource(PathSource):
    """Records read from files: JSONL, JSON (array), CSV or Parquet, at a local path or
    any fsspec URL (``gs://``, ``s3://``, ``https://``, ``file://``, ``memory://``)."""

    type: Literal["file"] = "file"
    path: str = Field(description="A path, URL or glob pattern (``data/*.jsonl``).")
    format: FileFormat | None = Field(
        default=None, description="File format; taken from the extension when not set."
    )
    encoding: str = Field(
        default="utf-8",
        description="Text encoding of JSONL, JSON and CSV files (a UTF-8 byte-order mark is "
        "dropped); e.g. cp1252 for files saved by older Windows programs.",
    )
    delimiter: str = Field(
        default=",", description="CSV only: the one character between fields (e.g. ';', '\\t')."
    )

    @field_validator("delimiter")
    @classmethod
    def _one_character(cls, value: str) -> str:
        if len(value) != 1 or value in '"\r\n':
            raise ValueError(
                "a CSV delimiter is one character other than a quote or a line break, "
                "e.g. ',', ';', '\\t' or '|'"
            )
        return value


class TextSource(PathSource):
    """One record per file of a glob: id = the path relative to the glob's fixed folder,
    content = the file's text, ``uri`` = its path (or URL)."""

    type: Literal["text"]
    path: str = Field(description="A glob (``corpus/**/*.txt``), path or fsspec URL.")
    encoding: str = Field(default="utf-8", description="The files' text encoding.")


class SqlSource(SourceBase):
    """The rows of a query, through SQLAlchemy, streamed with a server-side cursor."""

    type: Literal["sql"]
    url: str = Field(description="A SQLAlchemy URL, e.g. ${oc.env:POSTS_DB_URL}.")
    query: str = Field(min_length=1, description="The SELECT whose rows are the records.")
    timeout: float = Field(
        default=DEFAULT_TIMEOUT,
        gt=0,
        allow_inf_nan=False,
        description="Seconds a server (an http(s) URL, a database) may take to connect "
        "or to answer before the source is unavailable (exit 1).",
    )

    @field_serializer("url")
    def _no_password(self, url: str) -> str:
        """A batch's flow snapshot keeps the URL without its password."""
        from buttermilk.flows.source_sql import shown_url

        return shown_url(url)


class HuggingFaceSource(SourceBase):
    """One split of a dataset, through the ``datasets`` library (``pip install
    'buttermilk-batch[hf]'``)."""

    type: Literal["huggingface"]
    path: str = Field(description="A Hub name (tweet_eval), a builder (json) or a folder.")
    name: str | None = Field(default=None, description="The configuration (subset).")
    split: str = Field(default="train", description="The split to read.")
    revision: str | None = Field(default=None, description="A Hub branch, tag or commit.")
    data_files: str | list[str] | None = Field(
        default=None, description="Files for a builder such as json or csv (local paths)."
    )
    streaming: bool = Field(
        default=True, description="Read rows as they come (no copy into the cache first)."
    )
    class_labels: Literal["ids", "names"] = Field(
        default="ids",
        description="ClassLabel features: ids keeps the integer the dataset stores; names "
        "gives each its class name (-1, no label, as null), for ground_truth and where.",
    )


class BatchSource(SourceBase):
    """The records of an earlier batch in the same store, with its outputs kept under
    ``metadata.previous``. ``where`` keys: ``status``, ``variant`` or an output path
    ``AGENT.KEY[.KEY]`` (as an evaluation's label)."""

    type: Literal["batch"]
    batch_id: str = Field(min_length=1, description="An earlier batch's id (a unique prefix).")

    @field_validator("where")
    @classmethod
    def _output_paths(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key not in ("status", "variant") and "." not in key:
                raise ValueError(
                    f"where: {key!r} is not status, variant or an output path; an output "
                    "path is AGENT.KEY[.KEY] (as an evaluation's label), e.g. judge.label"
                )
        return value


def _source_type(value: Any) -> str:
    if isinstance(value, dict):
        kind = value.get("type", "file")
        return kind if isinstance(kind, str) else repr(kind)
    return str(getattr(value, "type", "file"))


DataSource = Annotated[
    Annotated[FileSource, Tag("file")]
    | Annotated[TextSource, Tag("text")]
    | Annotated[SqlSource, Tag("sql")]
    | Annotated[HuggingFaceSource, Tag("huggingface")]
    | Annotated[BatchSource, Tag("batch")],
    Discriminator(
        _source_type,
        custom_error_type="unknown_source_type",
        custom_error_message=f"unknown source type: use type: {'|'.join(SOURCE_TYPES)}",
    ),
]
