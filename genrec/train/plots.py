"""Training curves from a run directory's metrics.jsonl, as a PNG."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("genrec.train")
_warned: list[bool] = []  # the missing-matplotlib warning is said once per process


def plot_run(
    run_dir: Path,
    metric: str = "ndcg@10",
    out_name: str = "curves.png",
    x: str = "epoch",
    train_keys: tuple[str, ...] = ("loss",),
) -> Path | None:
    """One panel per training series in `train_keys` and one for the validation `metric`, against
    `x` (epoch, or step for GRPO runs); None when matplotlib is missing."""
    try:  # a Figure without pyplot: no global figure manager, no GUI backend, a lighter import
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        if not _warned:
            log.warning("matplotlib is not installed, so runs get no %s: pip install 'genrec[plot]'", out_name)
            _warned.append(True)
        return None
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [r for r in records if r.get("split") == "train"]
    valid = [r for r in records if r.get("split") == "valid" and not r.get("final") and metric in r]
    fig = Figure(figsize=(5 * (len(train_keys) + 1), 3.5))
    axes = fig.subplots(1, len(train_keys) + 1)
    for axis, key in zip(axes, train_keys):
        points = [r for r in train if key in r]
        axis.plot([r[x] for r in points], [r[key] for r in points], marker=".")
        axis.set(title=f"training {key}", xlabel=x)
    axes[-1].plot([r[x] for r in valid], [r[metric] for r in valid], marker=".", color="tab:green")
    axes[-1].set(title=f"validation {metric}", xlabel=x)
    for axis in axes:  # epochs and steps are whole numbers
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    out = Path(run_dir) / out_name
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(out)
    return out
