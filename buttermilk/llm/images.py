"""Images a record carries, sent to a multimodal model as OpenAI chat ``image_url`` parts.

An LLM agent's ``images`` option names the record fields holding them: ``content``,
``uri``, ``metadata.image``, ``metadata.photos`` (a list: one image per item), ... Each
value may be

- bytes (a Parquet or Hugging Face image column), sent as a ``data:`` URI whose MIME type
  is sniffed from the bytes (PNG, JPEG, GIF or WebP, the types OpenAI's chat API takes);
- a Hugging Face image object ``{bytes, path}``: its bytes, or its file when it has none;
- a ``data:image/...;base64,`` URI, checked and sent as a data URI of its bytes;
- an ``http(s)://`` URL, sent as it is (the model's server fetches it);
- a local file path, relative to ``image_root`` (default: the worker's current folder).

The user message becomes ``[{type: text, text: PROMPT}, {type: image_url, image_url:
{url, detail?}}, ...]``, the images in the order of the fields and of each list. A field
that is missing or null, a file that cannot be read, bytes that are not one of those
types, or an image larger than ``max_image_bytes`` is an :class:`ImageError`: the job
fails at once (no retries) with one line naming the record, the field and why. An empty
list sends no image.

The response cache keys an image by the SHA-256 of its data URI (a URL by itself), and the
messages kept in an output hold a short stand-in instead of the data (see :func:`stand_ins`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buttermilk.errors import UsageError
from buttermilk.llm.prompts import PromptError
from buttermilk.records import Record

DETAILS = ("auto", "low", "high")
DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024  # OpenAI's limit per image: 20 MB
_DATA_URI = re.compile(r"data:(image/[\w.+-]+)((?:;[\w.+-]+=[\w.+-]+)*);base64,", re.ASCII)
_FIELDS = frozenset(Record.model_fields) - {"record_id"}


class ImageError(PromptError):
    """Raised when a record's image cannot be sent: its field is missing or null, its file
    cannot be read, its bytes are not a PNG, JPEG, GIF or WebP image, or it is larger than
    ``max_image_bytes``. The job fails at once, without retries."""


def sniff_mime(data: bytes) -> str | None:
    """The MIME type of image bytes by their first bytes: ``image/png``, ``image/jpeg``,
    ``image/gif`` or ``image/webp``; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def decode_data_uri(uri: str) -> bytes | None:
    """The bytes of a base64 ``data:image/...`` URI (None when it is not one)."""
    head = _DATA_URI.match(uri)
    if head is None:
        return None
    try:
        return base64.b64decode(uri[head.end() :], validate=True)
    except (binascii.Error, ValueError):
        return None


def image_parts(messages: Sequence[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every ``image_url`` part of chat messages."""
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            yield from (p for p in content if isinstance(p, dict) and p.get("type") == "image_url")


def stand_ins(messages: Sequence[Mapping[str, Any]], *, hashed_only: bool = False) -> Any:
    """``messages`` with each data URI replaced by ``sha256:HEX`` (``hashed_only``, for
    cache keys) or a readable ``[image/png, 1234 bytes, sha256 HEX]`` (for the messages kept
    in an output, which would otherwise hold every image's bytes once more). Messages
    without images are returned as they are."""
    if next(image_parts(messages), None) is None:
        return messages
    found = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = [_stand_in(part, hashed_only) for part in content]
        found.append({**message, "content": content})
    return found


def _stand_in(part: Any, hashed_only: bool) -> Any:
    url = part.get("image_url", {}).get("url", "") if isinstance(part, dict) else ""
    if not (isinstance(url, str) and url.startswith("data:")):
        return part
    digest = hashlib.sha256(url.encode()).hexdigest()
    if not hashed_only:
        mime = url[5 : url.find(";")] if ";" in url else "image"
        size = len(decode_data_uri(url) or b"")
        digest = f"[{mime}, {size} bytes, sha256 {digest[:16]}]"
    else:
        digest = f"sha256:{digest}"
    return {**part, "image_url": {**part["image_url"], "url": digest}}


@dataclass(frozen=True)
class ImageFields:
    """Where a record's images are and how they are sent (an LLM agent's image options)."""

    fields: tuple[str, ...]
    detail: str | None = None
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    root: str | None = None

    def __post_init__(self) -> None:
        for name in self.fields:
            first = name.split(".", 1)[0]
            if first not in _FIELDS or name.endswith(".") or ".." in name:
                raise UsageError(
                    f"LLM: images={name!r} is not a record field: name content, uri, "
                    "ground_truth or metadata.KEY (deeper keys with dots)"
                )

    def content(self, record: Record, text: str) -> str | list[dict[str, Any]]:
        """The user message's content: ``text`` alone without image fields, else a text
        part and the record's image parts. Raises :class:`ImageError`."""
        if not self.fields:
            return text
        parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
        for name in self.fields:
            for value in self._values(record, name):
                url = self._url(value, record, name)
                image: dict[str, Any] = {"url": url}
                if self.detail is not None:
                    image["detail"] = self.detail
                parts.append({"type": "image_url", "image_url": image})
        return parts

    def _values(self, record: Record, name: str) -> list[Any]:
        first, *keys = name.split(".")
        value: Any = getattr(record, first)
        path = first
        for key in keys:
            if not isinstance(value, Mapping) or key not in value:
                there = sorted(value) if isinstance(value, Mapping) else type(value).__name__
                raise self._error(record, name, f"missing ({path} holds {there})")
            value, path = value[key], f"{path}.{key}"
        if value is None:
            raise self._error(record, name, "is null")
        return list(value) if isinstance(value, list | tuple) else [value]

    def _url(self, value: Any, record: Record, name: str) -> str:
        if isinstance(value, bytes | bytearray | memoryview):
            return self._data_uri(bytes(value), record, name)
        if isinstance(value, Mapping) and ("bytes" in value or "path" in value):
            if value.get("bytes") is not None:  # a Hugging Face image: {bytes, path}
                return self._url(value["bytes"], record, name)
            if isinstance(value.get("path"), str):
                return self._url(value["path"], record, name)
        if not isinstance(value, str):
            raise self._error(
                record,
                name,
                f"a {type(value).__name__} is not an image (give a path, an "
                "http(s) URL, a data: URI, bytes or {bytes, path})",
            )
        if value.startswith(("http://", "https://")):
            return value
        if value.startswith("data:"):
            data = decode_data_uri(value)
            if data is None:
                raise self._error(record, name, "is not a base64 data:image/... URI")
            return self._data_uri(data, record, name)
        return self._data_uri(self._read(value, record, name), record, name)

    def _read(self, where: str, record: Record, name: str) -> bytes:
        if not where:
            raise self._error(record, name, "is empty text, not a path")
        path = Path(where).expanduser()
        if not path.is_absolute():
            path = Path(self.root or ".") / path
        try:
            size = path.stat().st_size
            if size > self.max_bytes:
                raise self._error(record, name, self._too_big(f"file {str(path)!r}", size))
            return path.read_bytes()
        except OSError as exc:
            folder = f"image_root {self.root!r}" if self.root else "the current folder"
            raise self._error(
                record,
                name,
                f"cannot read {str(path)!r} ({exc.strerror}; relative paths "
                f"are read from {folder})",
            ) from None

    def _data_uri(self, data: bytes, record: Record, name: str) -> str:
        if len(data) > self.max_bytes:
            raise self._error(record, name, self._too_big("the image", len(data)))
        mime = sniff_mime(data)
        if mime is None:
            raise self._error(
                record, name, f"{len(data)} bytes that are not a PNG, JPEG, GIF or WebP image"
            )
        return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"

    def _too_big(self, what: str, size: int) -> str:
        return f"{what} is {size} bytes, more than max_image_bytes={self.max_bytes}"

    @staticmethod
    def _error(record: Record, name: str, why: str) -> ImageError:
        return ImageError(f"images: record {record.record_id}, field {name}: {why}")
