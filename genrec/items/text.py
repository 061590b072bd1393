"""Item text for language models, in HLLM's official format.

HLLM writes an item as a task prompt followed by `field: value` pairs, concatenated with no
separator, e.g. for MovieLens:
    "Compress the following sentence into embedding: title: Toy Storyyear: 1995genres: Animation, Comedy"
Fields that are missing or empty are skipped (as the reference does for NaN values); an item with no
text at all is embedded from the prompt alone.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from genrec.errors import DataError

if TYPE_CHECKING:  # a type only: configs import this module and must not import the data stack
    from genrec.data.dataset import Dataset

HLLM_PROMPT = "Compress the following sentence into embedding: "

# how a language model's hidden states over an item's text become one vector (`genrec.items.llm_embed`)
Pooling = Literal["last", "mean", "item-token"]


@dataclass
class TextTemplate:
    """How an item's text fields become one string."""

    prompt: str = HLLM_PROMPT
    fields: list[str] = field(default_factory=list)  # empty: every text field of the dataset, in its order
    separator: str = ""  # between `field: value` pairs (the official format has none)
    field_names: bool = True  # write "title: " before each value

    def key(self) -> str:
        return json.dumps([self.prompt, self.fields, self.separator, self.field_names])


@dataclass(frozen=True)
class ItemTexts:
    """The rendered text of every item. texts[0] is the padding item's (an empty string)."""

    texts: list[str]
    empty: int  # items that had no text in any of the fields (embedded from the prompt alone)
    fields: list[str]

    def checksum(self) -> str:
        """sha256 of all texts in item order: changes whenever the data or the template does."""
        return texts_sha256(self.texts)


def texts_sha256(texts: list[str]) -> str:
    """sha256 of a list of texts, each terminated by a NUL byte (so ["ab"] and ["a", "b"] differ)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode() + b"\0")
    return digest.hexdigest()


def format_value(value: object) -> str:
    """A field value as text: lists joined with ", ", missing values (None, NaN) as ""."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(part for part in (format_value(v) for v in value) if part)
    return str(value).strip()


def render_item_texts(dataset: Dataset, template: TextTemplate) -> ItemTexts:
    """The text of each item of `dataset` under `template`, padding first."""
    available = [name for name in dataset.items.schema.names if name not in ("item", "raw_id")]
    fields = template.fields or list(dataset.manifest.get("text_fields") or available)
    missing = [name for name in fields if name not in available]
    if missing:
        raise DataError(
            f"the item text template names field {missing[0]!r}, which the dataset at {dataset.path} "
            f"lacks; its item fields are: {', '.join(available) or 'none (no item text)'}"
        )
    if not fields:
        raise DataError(
            f"the dataset at {dataset.path} has no item text fields, so its items cannot be embedded from text"
        )
    columns = {name: dataset.items[name].to_pylist() for name in fields}
    order = dataset.items["item"].to_pylist()
    texts = [""] * (dataset.num_items + 1)
    empty = 0
    for row, item in enumerate(order):
        parts = []
        for name in fields:
            value = format_value(columns[name][row])
            if value:
                parts.append(f"{name}: {value}" if template.field_names else value)
        empty += not parts
        texts[item] = template.prompt + template.separator.join(parts)
    return ItemTexts(texts, empty, fields)
