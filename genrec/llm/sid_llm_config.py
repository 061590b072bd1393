"""The config of the SID LLM recommender (`genrec.llm.sid_llm`) and of its prompts; torch-free, as
every model config.

Tasks (MiniOneRec's SFT mix):
- `next-item`: the history's SIDs (optionally with titles), oldest first -> the next item's SID
- `title-to-sid`: an item's title -> its SID
- `sid-to-title`: an item's SID -> its title
- `titles-to-next`: the history's titles -> the next item's SID
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from genrec.errors import ConfigError
from genrec.models.base_config import GenerativeConfig, LLMTuning

Task = Literal["next-item", "title-to-sid", "sid-to-title", "titles-to-next"]

PREAMBLE = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
)


@dataclass
class PromptConfig:
    """Prompt templates (model.prompts.*) and how history items are written."""

    next_item: str = (
        PREAMBLE + "### Instruction:\nCan you predict the next possible item that the user may expect?"
        "\n\n### Input:\nThe user has interacted with items {history} in chronological order. Can you "
        "predict the next possible item that the user may expect?\n\n### Response:\n"
    )
    title_to_sid: str = PREAMBLE + "### Instruction:\nWhich item has the title: {title}?\n\n### Response:\n"
    sid_to_title: str = PREAMBLE + "### Instruction:\nWhat is the title of item {sid}?\n\n### Response:\n"
    titles_to_next: str = (
        PREAMBLE + "### Instruction:\nThe user has bought items titled {history}, in "
        "chronological order. Which item will the user buy next?\n\n### Response:\n"
    )
    separator: str = ", "
    with_titles: bool = False  # next-item: write each history item as `<a_1><b_2><c_3> "title"`
    title_field: str = "title"

    def __post_init__(self) -> None:
        for key, slot in (
            ("next_item", "{history}"),
            ("title_to_sid", "{title}"),
            ("sid_to_title", "{sid}"),
            ("titles_to_next", "{history}"),
        ):
            if getattr(self, key).count(slot) != 1:
                raise ConfigError(f"model.prompts.{key} must contain {slot} exactly once")


ALIGNMENT_TASKS: tuple[Task, ...] = ("title-to-sid", "sid-to-title", "titles-to-next")


@dataclass
class SIDLLMConfig(GenerativeConfig, LLMTuning):
    name: str = "sid-llm"
    path: str = ""  # a local Hugging Face causal LM directory, or python:PACKAGE
    gguf_file: str | None = None
    # full: every weight; lora: adapters + the new token rows; new-tokens: only the new token rows
    # (MiniOneRec's --freeze_LLM)
    train: Literal["full", "lora", "new-tokens"] = "lora"  # type: ignore[assignment]
    sid_file: str | None = None  # as TIGER's: default the SIDs the dataset ships
    max_len: int = 10  # history items in the prompt (MiniOneRec: 10)
    train_len: int = 50
    max_prompt_tokens: int = 1024  # longer prompts drop their oldest history items (counted in the log)
    tasks: list[str] = field(default_factory=lambda: ["next-item"])  # add title-to-sid, sid-to-title, titles-to-next
    prompts: PromptConfig = field(default_factory=PromptConfig)
    num_beams: int = 50
    eval_users_per_pass: int = 4

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in ("next-item", *ALIGNMENT_TASKS)]
        if unknown or "next-item" not in self.tasks:
            raise ConfigError(
                f"model.tasks must include next-item and only name next-item, "
                f"{', '.join(ALIGNMENT_TASKS)}; got {self.tasks}"
            )
        for key in ("max_len", "train_len", "max_prompt_tokens", "num_beams", "eval_users_per_pass"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key} must be >= 1, got {getattr(self, key)}")
