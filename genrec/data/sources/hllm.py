"""HLLM / PixelRec CSVs: interactions `user_id,item_id,timestamp` and an item-information CSV.

HLLM's layout is `dataset/<name>.csv` (interactions) and `information/<name>.csv` (`item_id` plus
text columns: PixelRec `title, tag, description`; HLLM's Amazon Books `title, description`);
`--raw` may be that folder (with `--name`) or the interactions file (with `--items`). Columns are
found by their header names, in any order (HLLM's own files put `item_id` first).

PixelRec's item table has a `tag` column (the video's category): unless features are declared
with `--item-feature`, it becomes a sparse feature.

Ties: HLLM's reference code sorts all events by timestamp with pandas' default (not stable)
sort, so the order of same-timestamp events, and with it some leave-one-out targets, depends on
the sort implementation. genrec keeps the file order for ties (a stable sort), as everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genrec.data.features import FeatureSpec
from genrec.data.sources.base import RawTables
from genrec.data.sources.readers import require_file
from genrec.data.sources.tabular import TabularSource
from genrec.errors import DataError


class HLLMSource(TabularSource):
    name = "hllm-csv"

    def __init__(self, name: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.dataset_name = name

    def options(self) -> dict[str, Any]:
        return {"name": self.dataset_name, **super().options()}

    def read(self, raw: Path) -> RawTables:
        if raw.is_dir():
            if self.dataset_name is None:
                found = sorted(p.stem for p in (raw / "dataset").glob("*.csv"))
                if len(found) != 1:
                    raise DataError(
                        f"{raw}/dataset: found {len(found)} datasets ({', '.join(found) or 'none'}); "
                        f"choose one with --name"
                    )
                self.dataset_name = found[0]
            interactions = require_file(raw / "dataset" / f"{self.dataset_name}.csv", "HLLM interactions file")
            info = raw / "information" / f"{self.dataset_name}.csv"
            if self.opts.items is None and info.is_file():
                self.opts.items = str(info)
            raw = interactions
        tables = super().read(raw)
        if not self.opts.item_features and tables.items is not None and "tag" in tables.items.column_names:
            tables.item_features = [FeatureSpec("tag", "sparse")]  # PixelRec
        tables.info = {
            "follows": "HLLM CSV as given (PixelRec / HLLM Amazon Books); ties keep file order, "
            "unlike HLLM's unstable pandas sort",
            "dataset": self.dataset_name or raw.stem,
        }
        return tables
