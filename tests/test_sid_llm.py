"""The SID LLM recommender: token extension, loss masking, constrained search, rewards, GRPO, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from genrec.cli import main
from genrec.config import load_config
from genrec.data.batching import TrainSequences
from genrec.errors import ConfigError
from genrec.items.semantic_ids import SemanticIds
from genrec.llm.prompts import PromptConfig, left_padded
from genrec.run_dir import RunDir
from genrec.runner import build_model, dataset_for, run, run_rl, split_for

from conftest import _write_tiny_llama, walk_dataset

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from genrec.llm.grpo import (  # noqa: E402
    collaborative_rewards,
    group_advantages,
    grpo_loss,
    rank_penalties,
    ranking_rewards,
    rl_config,
    rule_rewards,
    training_examples,
)
from genrec.llm.sid_tokens import add_sid_tokens  # noqa: E402

PROMPT_WORDS = [PromptConfig().next_item, PromptConfig().title_to_sid, PromptConfig().sid_to_title]


def _tiny_llama(folder, tie: bool = False):
    return _write_tiny_llama(folder, PROMPT_WORDS, tie_word_embeddings=tie)


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    folder = tmp_path_factory.mktemp("walk")
    dataset, sid_file = walk_dataset(folder, users=60)
    return dataset, sid_file, _tiny_llama(folder / "llama")


def _config(walk, *extra: str, mode: str = "lora"):
    dataset, sid_file, llama = walk
    return load_config(
        None,
        [
            f"data.path={dataset.path}",
            "model.name=sid-llm",
            f"model.path={llama}",
            f"model.sid_file={sid_file}",
            f"model.train={mode}",
            "model.max_len=5",
            "model.num_beams=10",
            "eval.ks=[1,5,10]",
            "train.batch_size=16",
            "train.lr=0.01",
            *extra,
        ],
    )


# ---- token extension ----------------------------------------------------------------------------------
@pytest.mark.parametrize("tie", [True, False])
def test_sid_tokens_are_added_once_with_mean_rows_and_left_padding(tmp_path, tie):
    folder = _tiny_llama(tmp_path / "llama", tie=tie)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    old = model.get_input_embeddings().weight.detach().clone()
    old_head = model.get_output_embeddings().weight.detach().clone()
    sids = SemanticIds(np.array([[-1, -1], [0, 3], [2, 1]]), [4, 4])
    extended = add_sid_tokens(model, tokenizer, sids)
    assert len(extended.new_token_ids) == 8 and len(tokenizer) == len(old) + 8
    assert tokenizer.convert_ids_to_tokens(extended.item_tokens[1].tolist()) == ["<a_0>", "<b_3>"]
    assert tokenizer.convert_ids_to_tokens(extended.item_tokens[2].tolist()) == ["<a_2>", "<b_1>"]
    assert tokenizer("<a_2><b_1>", add_special_tokens=False)["input_ids"] == extended.item_tokens[2].tolist()
    rows = model.get_input_embeddings().weight.detach()
    torch.testing.assert_close(rows[: len(old)], old)
    torch.testing.assert_close(rows[len(old) :], old.mean(0).expand(8, -1))
    torch.testing.assert_close(
        model.get_output_embeddings().weight.detach()[len(old) :], old_head.mean(0).expand(8, -1)
    )
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == tokenizer.eos_token
    again = add_sid_tokens(model, tokenizer, sids)  # an extended tokenizer is not extended twice
    assert (
        len(tokenizer) == len(old) + 8
        and again.new_token_ids == []
        and torch.equal(again.item_tokens, extended.item_tokens)
    )


# ---- the SFT loss -------------------------------------------------------------------------------------
def test_left_padding_puts_labels_on_the_answers_only():
    ids, mask, labels = left_padded([[5, 6, 7], [8]], [[1, 2], [3, 4]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 1, 2], [0, 0, 8, 3, 4]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]
    assert labels.tolist() == [[-100, -100, -100, 1, 2], [-100, -100, -100, 3, 4]]


def test_sft_loss_is_the_answer_tokens_negative_log_likelihood(walk):
    config = _config(walk, "model.tasks=[next-item,title-to-sid,sid-to-title]", mode="full")
    dataset = dataset_for(config.data)
    model = build_model(dataset, config, progress=False).eval()
    batch = TrainSequences(split_for(dataset, config).train, model.train_len).collate([1, 2])
    prompts, answers = model.task_examples(batch)
    targets = batch.targets[batch.targets != 0].tolist()
    assert len(prompts) == len(targets) + 2 * len(set(targets))  # next item per target, 2 alignment tasks per item
    assert answers[0] == model.item_tokens[targets[0]].tolist()
    loss = model(batch)
    # the same through transformers' own loss (a mean over the labelled tokens)
    ids, mask, labels = left_padded(prompts, answers, model.tokenizer.pad_token_id)
    out = model.llm(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), labels=labels)
    count = int((labels[:, 1:] != -100).sum())
    assert count == sum(len(a) for a in answers)
    torch.testing.assert_close(loss, out.loss * count, rtol=1e-4, atol=1e-4)


def test_prompts_drop_the_oldest_history_items_that_do_not_fit(walk):
    model = build_model(dataset_for(_config(walk).data), _config(walk), progress=False)
    builder = model.prompts
    latest_four = builder.history_prompt([16, 17, 18, 19])
    assert builder.truncated_items == 0
    builder.max_prompt_tokens = len(latest_four) + 2  # room for 4 items, not 5
    assert builder.history_prompt(list(range(1, 20))) == latest_four
    assert builder.truncated_items == 15
    sids = [model.item_tokens[i].tolist() for i in (16, 17, 18, 19)]
    flat = latest_four
    assert all(any(flat[j : j + 3] == sid for j in range(len(flat))) for sid in sids)


# ---- constrained beam search --------------------------------------------------------------------------
def test_constrained_search_is_valid_exact_and_ignores_sampling_settings(walk):
    config = _config(walk, "model.num_beams=30", "eval.ks=[1,5,10]", mode="full")
    model = build_model(dataset_for(config.data), config, progress=False).eval()
    gen = model.llm.generation_config
    gen.do_sample, gen.temperature, gen.top_p, gen.top_k = True, 5.0, 0.1, 2  # must not matter
    tables = model.level_tables()
    ids, mask = model.history_prompts(torch.tensor([[1, 2, 3], [7, 0, 0]]), torch.tensor([3, 1]))
    first, second = model.generate(ids, mask, tables), model.generate(ids, mask, tables)
    assert torch.equal(first.tokens, second.tokens)  # deterministic: nothing sampled
    trie = model.trie()
    for row in range(2):
        valid = first.leaves[row] >= 0
        assert int(valid.sum()) == 24  # 30 beams asked, 24 items exist
        assert all(trie.items(sid) for sid in first.tokens[row][valid].tolist())
        # the beams' scores are the exact sequence log-probabilities (the cached search agrees with a full pass)
        candidates = first.tokens[row][valid]
        rows = ids[row : row + 1].expand(len(candidates), -1)
        full = torch.cat([rows, candidates], dim=1)
        full_mask = torch.cat([mask[row : row + 1].expand(len(candidates), -1), torch.ones_like(candidates)], dim=1)
        labels = torch.full_like(full, -100)
        labels[:, -3:] = candidates
        exact = model.answer_logprobs(full, full_mask, labels).sum(1)
        torch.testing.assert_close(first.scores[row][valid], exact, rtol=1e-4, atol=1e-4)


# ---- rewards and GRPO ---------------------------------------------------------------------------------
def test_rewards_match_hand_computed_values():
    w = [1 / math.log2(k + 2) for k in range(4)]
    expected_penalties = [-x / sum(w) for x in w]
    torch.testing.assert_close(rank_penalties(4), torch.tensor(expected_penalties))
    hits = torch.tensor([[False, True, False, False], [False, False, False, False]])
    assert rule_rewards(hits).tolist() == [[0, 1, 0, 0], [0, 0, 0, 0]]
    torch.testing.assert_close(
        ranking_rewards(hits),
        torch.tensor(
            [[expected_penalties[0], 1.0, expected_penalties[2], expected_penalties[3]], [0.0, 0.0, 0.0, 0.0]]
        ),
    )
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0]])  # column 0 = padding
    probs = [math.exp(s) / (math.e + math.e**2 + math.e**3) for s in (1.0, 2.0, 3.0)]
    torch.testing.assert_close(
        collaborative_rewards(torch.tensor([[3, 1]]), scores), torch.tensor([[probs[2], probs[0]]])
    )
    rewards = torch.tensor([[1.0, 0.0, 0.0, 5.0]])
    valid = torch.tensor([[True, True, True, False]])
    mean, std = 1 / 3, math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 3)
    torch.testing.assert_close(
        group_advantages(rewards, valid, eps=0.0), torch.tensor([[(1 - mean) / std, -mean / std, -mean / std, 0.0]])
    )


def test_rl_examples_are_every_training_target(walk):
    config = _config(walk)
    dataset = dataset_for(config.data)
    split = split_for(dataset, config)
    examples = training_examples(split.train, build_model(dataset, config, progress=False))
    expected = [
        (u, split.train.user(u)[t])
        for u in range(1, split.train.num_users + 1)
        for t in range(1, len(split.train.user(u)))
    ]
    assert sorted(zip(examples.users.tolist(), examples.targets.tolist())) == sorted(expected)


def test_one_grpo_step_changes_the_trainable_weights_only(walk):
    config = _config(walk, "rl.num_generations=4", "rl.reward=rule", mode="lora")
    dataset = dataset_for(config.data)
    model = build_model(dataset, config, progress=False)
    reference = build_model(dataset, config, progress=False).eval().requires_grad_(False)
    reference.load_state_dict(model.state_dict())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
    examples = (
        TrainSequences(split_for(dataset, config).train, model.train_len).collate([1, 2, 3]).next_item_examples(5)
    )
    # rewards need a hit in some group to give a gradient: aim the targets at the model's own favourite SIDs
    tables = model.level_tables()
    ids, mask = model.history_prompts(examples.history, examples.lengths)
    favourite = tables.leaf_items[model.generate(ids, mask, tables, num_beams=4).leaves[:, 1], 0]
    examples = type(examples)(examples.users, examples.history, examples.lengths, favourite)
    loss, stats = grpo_loss(model, reference, examples, config.rl, tables)
    loss.backward()
    optimizer.step()
    assert stats["hit_rate"] == 1.0 and math.isfinite(stats["loss"]) and stats["loss"] == loss.item()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable  # adapters / new token rows moved, the base model did not
    assert any("lora" in n for n in changed)


# ---- the CLI and bad input ----------------------------------------------------------------------------
def test_sft_then_rl_then_eval_through_the_cli(walk, tmp_path, capsys):
    dataset, sid_file, llama = walk
    sets = [
        f"data.path={dataset.path}",
        "model.name=sid-llm",
        f"model.path={llama}",
        f"model.sid_file={sid_file}",
        "model.max_len=5",
        "model.num_beams=10",
        "eval.ks=[1,5,10]",
        "train.epochs=2",
        "train.batch_size=16",
    ]
    config_file = tmp_path / "sft.yaml"
    config_file.write_text("name: walk-sft\n")
    args = [a for s in sets for a in ("--set", s)]
    assert main(["llm", "sft", str(config_file), *args, "--out", str(tmp_path / "sft"), "--json"]) == 0
    sft = json.loads(capsys.readouterr().out)
    rl_file = tmp_path / "rl.yaml"
    rl_file.write_text(
        "rl: {num_generations: 4, reward: ranking, prompts_per_step: 4}\n"
        "train: {max_steps: 2, eval_every_steps: 1, lr: 0.0001}\n"
        "eval: {ks: [1, 5, 10]}\n"
    )
    assert (
        main(["llm", "rl", str(rl_file), "--from", str(tmp_path / "sft"), "--out", str(tmp_path / "rl"), "--json"]) == 0
    )
    rl = json.loads(capsys.readouterr().out)
    assert rl["steps"] == 2 and 0 <= rl["test"]["hr@10"] <= 1 and sft["test"]["num_users"] == rl["test"]["num_users"]
    assert main(["eval", str(tmp_path / "rl"), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["hr@10"] == rl["test"]["hr@10"]
    # RL from a run that is not an SFT-trained SID LLM
    assert (
        main(
            [
                "train",
                "--set",
                f"data.path={dataset.path}",
                "--set",
                "model.name=popularity",
                "--out",
                str(tmp_path / "pop"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    with pytest.raises(ConfigError, match="RL starts from a trained sid-llm run"):
        rl_config(None, [], tmp_path / "pop")
    # the collaborative reward reads another genrec run (here the popularity baseline)
    collaborative = rl_config(
        rl_file,
        ["rl.reward=collaborative", f"rl.collaborative_run={tmp_path / 'pop'}", "train.max_steps=1"],
        tmp_path / "sft",
    )
    assert run_rl(collaborative, tmp_path / "rl-cf", progress=False)["steps"] == 1
    rewards = [json.loads(line) for line in (tmp_path / "rl-cf" / "metrics.jsonl").read_text().splitlines()]
    train_rewards = [r["reward"] for r in rewards if r["split"] == "train"]
    assert len(train_rewards) == 1 and 0 < train_rewards[0] < 1  # probabilities, not 0/1 hits
    # a SID file that does not match the saved model's tokens
    table = json.loads(sid_file.read_text())
    table["i0"], table["i1"] = table["i1"], table["i0"]
    other = tmp_path / "other.index.json"
    other.write_text(json.dumps(table))
    assert main(["eval", str(tmp_path / "sft"), "--set", f"model.sid_file={other}"]) != 0
    assert "do not match the SID tokens of the saved model" in capsys.readouterr().err
    # a history item without a SID
    del table["i5"]
    other.write_text(json.dumps(table))
    assert main(["eval", str(tmp_path / "sft"), "--set", f"model.sid_file={other}"]) != 0
    assert "1 items have no semantic ID" in capsys.readouterr().err
    assert main(["llm", "sft", str(config_file), "--set", "model.name=sasrec"]) != 0
    assert "genrec llm sft trains the SID LLM" in capsys.readouterr().err


def test_rl_resumes_to_the_same_weights_as_an_uninterrupted_run(walk, tmp_path, capsys):
    run(_config(walk, "train.epochs=1"), tmp_path / "sft", progress=False)
    config = rl_config(
        None,
        [
            "rl.num_generations=4",
            "train.max_steps=3",
            "rl.prompts_per_step=4",
            "train.eval_every_steps=1",
            "train.lr=0.003",
            "train.schedule=cosine",
            "train.warmup_steps=2",
            "train.patience=null",
        ],
        tmp_path / "sft",
    )
    whole = run_rl(config, tmp_path / "whole", progress=False)
    assert run_rl(config, tmp_path / "parts", progress=False, stop_after_step=1) is None
    assert main(["llm", "rl", "--resume", str(tmp_path / "parts"), "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    for which in ("valid", "test"):
        resumed[which].pop("seconds"), whole[which].pop("seconds")
        assert resumed[which] == whole[which]
    last = [torch.load(tmp_path / d / "last.pt", weights_only=True) for d in ("whole", "parts")]
    assert last[0]["state"]["step"] == last[1]["state"]["step"] == 3
    first = torch.load(tmp_path / "sft" / "best.pt", weights_only=True)["model"]
    assert any(not torch.equal(first[k], v) for k, v in last[0]["model"].items())  # RL moved the weights...
    for key, value in last[0]["model"].items():
        assert torch.equal(value, last[1]["model"][key]), key  # ...and the resumed run moved them identically
    steps = [
        json.loads(r)["step"]
        for r in (tmp_path / "parts" / "metrics.jsonl").read_text().splitlines()
        if json.loads(r)["split"] == "train"
    ]
    assert steps == [1, 2, 3]
    assert (tmp_path / "parts" / "curves.png").stat().st_size > 0  # reward, hit rate, KL and validation per step
    assert main(["llm", "rl", "--resume", str(tmp_path / "parts"), "--set", "rl.beta=0.5"]) == 2
    assert "differs from the run's in rl.beta" in capsys.readouterr().err
    assert main(["llm", "rl", "--resume", str(tmp_path / "sft")]) == 2
    assert "as an RL run: its config has no rl.sft_run" in capsys.readouterr().err
    (tmp_path / "parts" / "last.pt").unlink()
    assert main(["llm", "rl", "--resume", str(tmp_path / "parts")]) == 2
    assert "cannot resume: no checkpoint" in capsys.readouterr().err


def test_grpo_follows_the_lr_schedule_and_stops_without_improvement(walk, tmp_path):
    run(_config(walk, "train.epochs=1"), tmp_path / "sft", progress=False)
    common = ["rl.num_generations=4", "rl.prompts_per_step=4", "train.lr=0.002"]

    def train_records(folder):
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["split"] == "train"]

    warm = rl_config(
        None,
        [*common, "train.max_steps=3", "train.warmup_steps=2", "train.eval_every_steps=3", "train.log_to=[mlflow]"],
        tmp_path / "sft",
    )
    run_rl(warm, tmp_path / "warm", progress=False)
    records = train_records(tmp_path / "warm")
    assert [r["lr"] for r in records] == pytest.approx([0.001, 0.002, 0.002])
    # train.log_to holds for GRPO too: MLflow's local store has each step's reward
    mlflow = pytest.importorskip("mlflow")
    client = mlflow.tracking.MlflowClient((tmp_path / "warm" / "mlruns").resolve().as_uri())
    (logged,) = client.search_runs([client.get_experiment_by_name("genrec").experiment_id])
    history = client.get_metric_history(logged.info.run_id, "train/reward")
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx([r["reward"] for r in records])
    # a learning rate too small to change the ranking: no validation improves, patience 1 stops at the first
    still = rl_config(
        None,
        [*common, "train.lr=1e-12", "train.max_steps=6", "train.eval_every_steps=2", "train.patience=1"],
        tmp_path / "sft",
    )
    summary = run_rl(still, tmp_path / "still", progress=False)
    assert summary["stopped_early"] and summary["best_step"] == 0
    assert [r["step"] for r in train_records(tmp_path / "still")] == [1, 2]


def test_sid_llm_config_errors(walk):
    with pytest.raises(ConfigError, match="model.tasks must include next-item"):
        _config(walk, "model.tasks=[title-to-sid]")
    with pytest.raises(ConfigError, match=r"model.prompts.next_item must contain \{history\} exactly once"):
        _config(walk, "model.prompts.next_item=no slot here")
    with pytest.raises(ConfigError, match="rl.num_generations must be >= 2"):
        _config(walk, "rl.num_generations=1")
    with pytest.raises(ConfigError, match="the prompts use item titles but the dataset has no .name. item field"):
        build_model(
            dataset_for(_config(walk).data),
            _config(walk, "model.prompts.title_field=name", "model.prompts.with_titles=true"),
            progress=False,
        )


def test_sft_lowers_the_answer_loss_and_raises_the_ranking(walk, tmp_path):
    untrained = run(
        _config(walk, "train.epochs=1", "train.max_steps=1", "train.lr=1e-9"), tmp_path / "a", progress=False
    )
    trained = run(_config(walk, "train.epochs=12", "train.eval_every=4", mode="full"), tmp_path / "b", progress=False)
    log = [json.loads(line) for line in (trained.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["split"] == "train"]
    assert losses[-1] < 0.6 * losses[0]  # the SID answer's negative log-likelihood falls
    assert trained.metrics["test"]["mrr"] > untrained.metrics["test"]["mrr"]


def test_grpo_on_the_shared_trainer_takes_the_steps_of_a_plain_loop(walk, tmp_path):
    """The trainer adds validation, checkpoints and logging around GRPO, never a different step: the
    weights after 2 steps equal those of the bare algorithm (sample prompts, grpo_loss, AdamW step)."""
    run(_config(walk, "train.epochs=1"), tmp_path / "sft", progress=False)
    config = rl_config(
        None,
        [
            "rl.num_generations=4",
            "rl.prompts_per_step=16",
            "train.max_steps=2",
            "train.lr=0.003",
            "train.grad_clip=0.5",
        ],
        tmp_path / "sft",
    )
    summary = run_rl(config, tmp_path / "rl", progress=False)
    assert summary is not None and summary["steps"] == 2
    trained = torch.load(tmp_path / "rl" / "last.pt", weights_only=True)["model"]

    dataset = dataset_for(config.data)
    model = build_model(dataset, config, progress=False)
    model.load_state_dict(torch.load(tmp_path / "sft" / "best.pt", weights_only=True)["model"])
    reference = build_model(dataset, config, progress=False).eval().requires_grad_(False)
    reference.load_state_dict(model.state_dict())
    examples = training_examples(split_for(dataset, config).train, model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=0.003, betas=(0.9, 0.98), weight_decay=0.0)
    generator = torch.Generator().manual_seed(config.seed)
    tables = model.level_tables()
    for _ in range(2):
        rows = torch.randint(len(examples.targets), (16,), generator=generator)
        batch = type(examples)(
            examples.users[rows], examples.history[rows], examples.lengths[rows], examples.targets[rows]
        )
        optimizer.zero_grad(set_to_none=True)
        loss, _ = grpo_loss(model, reference, batch, config.rl, tables)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        optimizer.step()
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, reference.state_dict()[k])]
    assert moved  # the loop changed the weights...
    for key, value in model.state_dict().items():
        torch.testing.assert_close(trained[key], value, rtol=1e-5, atol=1e-7, msg=key)  # ...as the trainer did


def test_rl_configs_name_grpo_counts_and_refuse_next_item_keys(walk, tmp_path):
    run(_config(walk, "train.epochs=1"), tmp_path / "sft", progress=False)
    with pytest.raises(ConfigError, match=r"train.batch_size is not used by GRPO \(set rl.prompts_per_step"):
        rl_config(None, ["train.batch_size=4"], tmp_path / "sft")
    with pytest.raises(ConfigError, match="train.loss is not used by GRPO"):
        rl_config(None, ["train.loss.name=full"], tmp_path / "sft")
    with pytest.raises(ConfigError, match="rl.prompts_per_step must be >= 1"):
        rl_config(None, ["rl.prompts_per_step=0"], tmp_path / "sft")
    # the SFT run's train section (its batch size, its epochs) does not leak into RL
    config = rl_config(None, ["rl.prompts_per_step=5"], tmp_path / "sft")
    assert config.train.epochs == 100 and config.rl.prompts_per_step == 5
    assert config.model == RunDir.open(tmp_path / "sft").config().model
