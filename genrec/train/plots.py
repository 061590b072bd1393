"""Training curves from a run directory's metrics.jsonl, as a PNG."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("genrec.train")


def plot_run(run_dir: Path, metric: str = "ndcg@10", out_name: str = "curves.png") -> Path | None:
    """Plot the training loss and validation `metric` per epoch; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.debug("matplotlib is not installed (pip install 'genrec[plot]'): no curves.png")
        return None
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [r for r in records if r.get("split") == "train"]
    valid = [r for r in records if r.get("split") == "valid" and not r.get("final") and metric in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot([r["epoch"] for r in train], [r["loss"] for r in train], marker=".")
    left.set(title="training loss", xlabel="epoch")
    right.plot([r["epoch"] for r in valid], [r[metric] for r in valid], marker=".", color="tab:green")
    right.set(title=f"validation {metric}", xlabel="epoch")
    fig.tight_layout()
    out = Path(run_dir) / out_name
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return out
