"""What images cost in prompt tokens, by the provider's published formula where one is known.

OpenAI's GPT-4o-class models count an image by 512-pixel tiles ("Calculating costs" in
OpenAI's Images and vision guide,
https://platform.openai.com/docs/guides/images-vision?api-mode=chat#calculating-costs,
whose worked examples the tests repeat):

- ``detail: low``: the model's base tokens, whatever the size;
- ``high`` (and ``auto``, counted as ``high``: the most it may cost): the image is scaled
  down to fit in 2048 x 2048, then down so its shorter side is at most 768 pixels (images
  are not scaled up); each 512 x 512 tile needed to cover it costs the model's tile
  tokens, plus its base tokens once. A 1024 x 1024 image costs 85 + 4 x 170 = 765 tokens
  on gpt-4o; 2048 x 4096 is scaled to 768 x 1536, 6 tiles: 1105.

gpt-4o-mini counts the same tiles at 2833 base and 5667 per tile (the guide's table: its
tokens are cheaper); gpt-4.1 as gpt-4o.

gpt-4.1-mini, gpt-4.1-nano, o4-mini, gpt-5-mini and gpt-5-nano count 32 x 32 pixel patches
(same guide): the patches covering the image, ``ceil(w/32) * ceil(h/32)``; over 1536,
the image is first scaled by ``r = sqrt(32**2 * 1536 / (w * h))``, shrunk further so a
whole number of patches spans its width or height, and the patches counted again (1536
at most); the count times the model's multiplier (1.62, 2.46, 1.72, 1.62, 2.46) is its
tokens, rounded up. A 1024 x 1024 image is 1024 patches; 1800 x 2400 is scaled to
1056 x 1408: 1452 patches.

Other models (other providers, local servers) have no formula here: their images are
reported as not counted, with the reason, never as 0. An image given by URL is not
fetched, so its size, and its tokens, are unknown.

Image sizes are read with Pillow, imported only when an estimate counts an image.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from buttermilk.llm.images import decode_data_uri, image_parts

TILE = 512
FIT = 2048
SHORT_SIDE = 768
PATCH = 32
MAX_PATCHES = 1536

#: Base and per-tile tokens by model family (OpenAI's table); longest prefix wins.
TILE_TOKENS: dict[str, tuple[int, int]] = {
    "gpt-4o": (85, 170),
    "chatgpt-4o": (85, 170),
    "gpt-4-turbo": (85, 170),
    "gpt-4o-mini": (2833, 5667),
    "gpt-4.1": (85, 170),
}

#: Multipliers of the patch-counted models (OpenAI's table); longest prefix wins.
PATCH_MULTIPLIERS: dict[str, float] = {
    "gpt-4.1-mini": 1.62,
    "gpt-4.1-nano": 2.46,
    "o4-mini": 1.72,
    "gpt-5-mini": 1.62,
    "gpt-5-nano": 2.46,
}


def _family(model: str, families: Iterable[str]) -> str | None:
    """The longest of ``families`` that ``model`` is (a dated or ``provider/`` prefixed
    name works: ``openai/gpt-4o-2024-08-06``)."""
    name = model.rsplit("/", 1)[-1].lower()
    known = [f for f in families if name == f or name.startswith(f + "-")]
    return max(known, key=len) if known else None


def tile_formula(model: str) -> tuple[int, int] | None:
    """(base, per tile) tokens of ``model``, or None when it is not tile-counted (a
    patch-counted model is not, even when a tile-counted name is its prefix)."""
    found = _family(model, [*TILE_TOKENS, *PATCH_MULTIPLIERS])
    return TILE_TOKENS.get(found) if found else None


def patch_multiplier(model: str) -> float | None:
    """The multiplier of a patch-counted ``model``, or None when it is not one."""
    found = _family(model, [*TILE_TOKENS, *PATCH_MULTIPLIERS])
    return PATCH_MULTIPLIERS.get(found) if found else None


def patch_tokens(width: int, height: int, multiplier: float) -> int:
    """Prompt tokens of a ``width`` x ``height`` pixel image by OpenAI's patch formula (see
    the module doc). Raises ValueError for a size that is not positive."""
    if width <= 0 or height <= 0:
        raise ValueError(f"an image of {width} x {height} pixels")

    def cover(w: float, h: float) -> int:  # patches; a hair of float error is not a patch
        return math.ceil(w / PATCH - 1e-9) * math.ceil(h / PATCH - 1e-9)

    patches = cover(width, height)
    if patches > MAX_PATCHES:
        r = math.sqrt(PATCH**2 * MAX_PATCHES / (width * height))
        across, down = width * r / PATCH, height * r / PATCH
        r *= min(math.floor(across) / across, math.floor(down) / down)
        patches = min(cover(width * r, height * r), MAX_PATCHES)
    return math.ceil(patches * multiplier - 1e-9)


def tile_tokens(width: int, height: int, detail: str | None, base: int, tile: int) -> int:
    """Prompt tokens of a ``width`` x ``height`` pixel image by OpenAI's tile formula (see
    the module doc). Raises ValueError for a size that is not positive."""
    if width <= 0 or height <= 0:
        raise ValueError(f"an image of {width} x {height} pixels")
    if detail == "low":
        return base
    scale = min(1.0, FIT / max(width, height))
    width, height = int(width * scale), int(height * scale)
    scale = min(1.0, SHORT_SIDE / min(width, height))
    width, height = int(width * scale), int(height * scale)
    return base + tile * math.ceil(width / TILE) * math.ceil(height / TILE)


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels of PNG, JPEG, GIF or WebP bytes, read from their header.
    Raises ValueError when the bytes are not an image Pillow can read."""
    from PIL import Image, UnidentifiedImageError  # heavy: only estimates of images need it

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read the image's size ({exc})") from None
    return int(width), int(height)


@dataclass
class ImageCount:
    """The images of some messages: how many, the tokens of those counted, and how many
    could not be counted and why (the first reason)."""

    images: int = 0
    tokens: int = 0
    uncounted: int = 0
    why: str | None = None

    def skip(self, why: str) -> None:
        self.uncounted += 1
        self.why = self.why or why


def count_images(messages: Sequence[Mapping[str, Any]], model: str) -> ImageCount:
    """The prompt tokens of the images in chat ``messages`` sent to ``model``."""
    found = ImageCount()
    formula, multiplier = tile_formula(model), patch_multiplier(model)
    for part in image_parts(messages):
        found.images += 1
        image = part.get("image_url") or {}
        url = str(image.get("url", ""))
        if formula is None and multiplier is None:
            known = ", ".join(sorted([*TILE_TOKENS, *PATCH_MULTIPLIERS]))
            found.skip(
                f"no published image token formula is known here for model {model!r} "
                f"(known: {known})"
            )
            continue
        data = decode_data_uri(url)
        if data is None:
            found.skip("images given by URL are not fetched, so their size is unknown")
            continue
        try:
            width, height = image_size(data)
        except ValueError as exc:
            found.skip(str(exc))
            continue
        if formula is not None:
            found.tokens += tile_tokens(width, height, image.get("detail"), *formula)
        elif multiplier is not None:
            found.tokens += patch_tokens(width, height, multiplier)
    return found
