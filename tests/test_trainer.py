"""The trainer on real data (MovieLens) with tiny models: learning, exact resume, errors."""

import json

import numpy as np
import pytest
import torch

from genrec.cli import main
from genrec.config import load_config
from genrec.errors import ConfigError, GenrecError
from genrec.models import SequentialScorer
from genrec.run_dir import RunDir
from genrec.runner import build_model, dataset_for, evaluate_split, run, split_for
from genrec.train.losses import SampledSoftmaxLoss
from genrec.train.trainer import Trainer, TrainingError, adamw

TINY = [
    "model.name=hstu",
    "model.max_len=20",
    "model.dim=16",
    "model.attention_dim=8",
    "model.value_dim=8",
    "model.num_heads=2",
    "train.batch_size=128",
    "train.loss.num_negatives=32",
    "train.device=cpu",
    "eval.ks=[10, 50]",
    "train.patience=null",
]


def tiny_sasrec(data_dir):
    return [
        f"data.raw={data_dir / 'ml-100k'}",
        "model.name=sasrec",
        "model.max_len=20",
        "model.dim=16",
        "train.device=cpu",
    ]


def tiny(data_dir, *overrides):
    return load_config(None, [f"data.raw={data_dir / 'ml-100k'}", *TINY, *overrides])


def test_training_learns_and_writes_the_run_directory(data_dir, tmp_path):
    config = tiny(data_dir, "train.epochs=4")
    result = run(config, tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.5
    assert [r["epoch"] for r in records if r["split"] == "valid" and not r.get("final")] == [1, 2, 3, 4]
    for name in ("config.json", "metrics.json", "last.pt", "best.pt", "curves.png"):
        assert (tmp_path / "run" / name).is_file(), name
    # the trained model ranks far better than the same model untrained
    dataset = dataset_for(config.data)
    split = split_for(dataset, config)
    untrained = evaluate_split(
        SequentialScorer(build_model(dataset, config).eval()), dataset, split, "valid", config, progress=False
    )
    assert result.metrics["valid"]["hr@50"] > 2 * untrained["hr@50"]
    assert result.metrics["test"]["num_users"] == 943
    # `genrec eval RUN_DIR` reloads the best checkpoint and gets the same test numbers
    code = main(["eval", str(tmp_path / "run"), "--json"])
    assert code == 0


def test_resume_reaches_the_same_metrics_as_an_uninterrupted_run(data_dir, tmp_path, capsys):
    config = tiny(data_dir, "train.epochs=4", "model.dropout=0.3")  # dropout and sampling use the saved RNG
    whole = run(config, tmp_path / "whole", progress=False).metrics

    run_dir = RunDir.create(tmp_path / "parts", config)
    dataset = dataset_for(config.data)
    split = split_for(dataset, config)
    assert Trainer(build_model(dataset, config), split, config, run_dir, progress=False).fit(stop_after_epoch=2) is None
    # as if the process died after logging epoch 3 but before its checkpoint: the resumed run logs it again
    run_dir.log_metrics({"split": "train", "epoch": 3, "step": 10**6, "loss": 1.0})
    assert main(["train", "--resume", str(tmp_path / "parts"), "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    for which in ("valid", "test"):
        resumed[which].pop("seconds"), whole[which].pop("seconds")
        assert resumed[which] == whole[which]  # bit-for-bit: same weights, same ranks
    records = [json.loads(r) for r in (tmp_path / "parts" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["split"] == "train"] == [1, 2, 3, 4]
    assert 10**6 not in [r["step"] for r in records if "step" in r]
    # resuming a finished run evaluates it again and keeps one final record per split
    assert main(["train", "--resume", str(tmp_path / "parts"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["ndcg@10"] == resumed["test"]["ndcg@10"]
    records = [json.loads(r) for r in (tmp_path / "parts" / "metrics.jsonl").read_text().splitlines()]
    assert sorted(r["split"] for r in records if r.get("final")) == ["test", "valid"]


def test_resume_refuses_a_different_config(data_dir, tmp_path, capsys):
    config = tiny(data_dir, "train.epochs=1")
    run(config, tmp_path / "r", progress=False)
    assert main(["train", "--resume", str(tmp_path / "r"), "--set", "model.dim=32"]) == 2
    assert "differs from the run's in model.dim" in capsys.readouterr().err


def test_bad_training_input(data_dir, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="model.max_len must be >= 1"):
        tiny(data_dir, "model.max_len=0")
    with pytest.raises(
        ConfigError,
        match="unknown config key 'model.heads'; valid keys of model: name, item_features, .*, max_len, dim",
    ):
        tiny(data_dir, "model.heads=2")
    with pytest.raises(ConfigError, match="train.metric: 'ndcg@20' is not computed"):
        tiny(data_dir, "train.metric=ndcg@20").check_trainable()
    beauty = load_config(None, [f"data.raw={data_dir / 'amazon-beauty'}", "data.source=letter", *TINY])
    with pytest.raises(ConfigError, match="has no timestamps.*model.time_buckets=0"):
        run(beauty, tmp_path / "beauty", progress=False)
    # HLLM's user model is where its time bias is (the check comes before any item text is read)
    hllm = load_config(None, [f"data.raw={data_dir / 'amazon-beauty'}", "data.source=letter", "model.name=hllm"])
    assert (
        hllm.model.uses_time and not load_config(None, ["model.name=hllm", "model.user.time_buckets=0"]).model.uses_time
    )
    with pytest.raises(ConfigError, match="has no timestamps.*model.user.time_buckets=0"):
        build_model(dataset_for(hllm.data), hllm)

    def broken_loss(self, users, positives, model):
        return users.sum() * float("nan")

    monkeypatch.setattr(SampledSoftmaxLoss, "forward", broken_loss)
    with pytest.raises(TrainingError, match="the loss became nan at epoch 1, step 1; try a lower train.lr"):
        run(tiny(data_dir, "train.epochs=1"), tmp_path / "nan", progress=False)
    assert not (tmp_path / "nan").exists()  # a run that failed before any checkpoint leaves nothing to block a retry
    from genrec.runner import scorer_for

    config = tiny(data_dir)
    with pytest.raises(GenrecError, match="no run directory at .*nowhere"):
        scorer_for(dataset_for(config.data), None, config, tmp_path / "nowhere")
    RunDir.create(tmp_path / "untrained", config)
    with pytest.raises(GenrecError, match=r"untrained has no best\.pt yet: .*genrec train --resume"):
        scorer_for(dataset_for(config.data), None, config, tmp_path / "untrained")
    assert torch.get_num_threads() >= 1


@pytest.mark.parametrize("model", ["hstu", "sasrec"])
def test_micro_batches_take_the_same_step_as_the_whole_batch(data_dir, model):
    """Gradient accumulation over micro-batches (the CPU default) must not change the update."""
    steps = {}
    for micro in (128, 16):
        common = ["model.dropout=0.0", "train.loss.name=full", f"train.micro_batch_size={micro}"]
        config = tiny(data_dir, *common) if model == "hstu" else load_config(None, [*tiny_sasrec(data_dir), *common])
        dataset = dataset_for(config.data)
        trainer = Trainer(build_model(dataset, config), split_for(dataset, config), config, None, progress=False)
        trainer.train_epoch(1, batches=[next(trainer.objective.batches(1))])  # one step on the same first batch
        # the gradients of the step, not the weights after it: AdamW turns the float noise of a
        # gradient that is zero in exact arithmetic (SASRec's key bias) into a full-size update
        steps[micro] = {k: p.grad.clone() for k, p in trainer.model.named_parameters() if p.grad is not None}
    assert steps[128].keys() == steps[16].keys() and len(steps[128]) > 4
    for name, grad in steps[128].items():
        torch.testing.assert_close(steps[16][name], grad, rtol=1e-4, atol=1e-7, msg=name)


def test_micro_batches_default_to_the_whole_batch_where_the_model_skips_padding(data_dir):
    """HSTU with packed tokens (the CPU default) trains whole batches; padded layouts keep 16 rows."""
    from genrec.train.objectives import micro_batch_size

    cpu = torch.device("cpu")
    sizes = {}
    for name, overrides in {
        "hstu": [],
        "hstu padded": ["model.token_layout=padded"],
        "hstu, 24 asked": ["train.micro_batch_size=24"],
        "sasrec": None,
    }.items():
        config = tiny(data_dir, *overrides) if overrides is not None else load_config(None, tiny_sasrec(data_dir))
        model = build_model(dataset_for(config.data), config)
        sizes[name] = micro_batch_size(config.train, cpu, model)
    assert sizes == {"hstu": None, "hstu padded": 16, "hstu, 24 asked": 24, "sasrec": 16}


def test_in_batch_negatives_refuse_micro_batches(data_dir):
    with pytest.raises(ConfigError, match="micro_batch_size"):
        tiny(data_dir, "train.loss.name=in-batch", "train.micro_batch_size=16")


def test_export_writes_the_item_table_the_evaluator_scores_with(data_dir, tmp_path, capsys):
    from genrec.serve.export import read_bin

    config = tiny(data_dir, "train.epochs=1")
    run(config, tmp_path / "run", progress=False)
    assert main(["export", str(tmp_path / "run"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    out = tmp_path / "run" / "export"
    assert summary["num_items"] == 1682 and summary["dim"] == 16 and summary["l2_normalised"]
    vectors = np.load(out / "item_embeddings.npy")
    dataset = dataset_for(config.data)
    model = build_model(dataset, config)
    model.load_state_dict(torch.load(tmp_path / "run" / "best.pt", weights_only=False)["model"])
    expected = model.eval().all_item_vectors()[1:].detach().numpy()
    np.testing.assert_allclose(vectors, expected, rtol=1e-6)
    np.testing.assert_array_equal(read_bin(out / "embedding.fbin", np.float32), vectors)
    np.testing.assert_array_equal(read_bin(out / "id.u64bin", np.uint64)[:, 0], np.arange(1, 1683))
    raw_ids = json.loads((out / "item_ids.json").read_text())
    assert raw_ids == dataset.item_raw_ids()[1:] and len(raw_ids) == 1682
    # a second export refuses to overwrite silently; a run without a checkpoint is a clear error
    assert main(["export", str(tmp_path / "run")]) == 2
    assert "not empty" in capsys.readouterr().err
    RunDir.create(tmp_path / "untrained", config)
    assert main(["export", str(tmp_path / "untrained")]) == 2
    assert "best.pt" in capsys.readouterr().err


def test_max_steps_stops_training_then_validates_and_tests(data_dir, tmp_path):
    config = tiny(data_dir, "train.epochs=5", "train.max_steps=3", "train.batch_size=256")  # 4 steps per epoch
    result = run(config, tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in records if r["split"] == "train"] == [(1, 3)]
    assert [r["epoch"] for r in records if r["split"] == "valid" and not r.get("final")] == [1]
    assert result.metrics["test"]["num_users"] == 943


def test_batches_and_weights_are_on_the_trainer_device(data_dir, monkeypatch):
    """No GPU here: record the device every batch is moved to and check it is the trainer's (a
    missing `.to(device)` in any objective would leave batches where the data loader made them)."""
    from genrec.data.batching import SequenceBatch

    config = tiny(data_dir, "train.max_steps=2", "train.device=cpu")
    dataset = dataset_for(config.data)
    device = torch.device("cpu", 0)  # not the default torch.device("cpu"): a device the test can tell apart
    trainer = Trainer(
        build_model(dataset, config), split_for(dataset, config), config, None, device=device, progress=False
    )
    moved_to = []
    real_to = SequenceBatch.to
    monkeypatch.setattr(SequenceBatch, "to", lambda self, d: moved_to.append(d) or real_to(self, d))
    trainer.train_epoch(1, batches=[next(trainer.objective.batches(1))])
    assert moved_to == [device] and trainer.step_context.device == device
    assert all(p.device.type == "cpu" for p in trainer.model.parameters())


@pytest.fixture
def one_thread(monkeypatch):
    """Bit-exact comparisons: with several threads, CPU backward passes that scatter-add (embedding
    and relative-bias gradients) sum in a varying order, so two identical runs differ by float noise.
    The thread governor an earlier in-process CLI call may have started is switched off too."""
    import genrec.threads

    monkeypatch.setattr(genrec.threads, "_governor", None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_validation_every_n_steps_resumes_exactly_from_the_middle_of_an_epoch(data_dir, tmp_path, one_thread):
    # 943 users in batches of 64: 15 steps an epoch, validated every 4 steps and at the end
    config = tiny(data_dir, "train.epochs=2", "train.batch_size=64", "train.eval_every_steps=4", "model.dropout=0.3")
    whole = run(config, tmp_path / "whole", progress=False).metrics
    records = [json.loads(r) for r in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "valid" and not r.get("final")] == [
        4,
        8,
        12,
        16,
        20,
        24,
        28,
        30,
    ]
    assert [r["step"] for r in records if r["split"] == "train"] == [15, 30]  # one training record per epoch

    run_dir = RunDir.create(tmp_path / "parts", config)
    dataset = dataset_for(config.data)
    trainer = Trainer(build_model(dataset, config), split_for(dataset, config), config, run_dir, progress=False)
    assert trainer.fit(stop_after_step=5) is None  # stops at the checkpoint of step 8, in epoch 1
    saved = torch.load(tmp_path / "parts" / "last.pt", weights_only=True)["state"]
    assert (saved["step"], saved["epoch"], saved["epoch_step"]) == (8, 0, 8)
    # resumed in this process (the CLI would choose its own thread count, and float sums depend on it)
    trainer = Trainer(build_model(dataset, config), split_for(dataset, config), config, run_dir, progress=False)
    trainer.resume(tmp_path / "parts" / "last.pt")
    resumed = trainer.fit()
    last = [torch.load(tmp_path / d / "last.pt", weights_only=True)["model"] for d in ("whole", "parts")]
    for key, value in last[0].items():
        assert torch.equal(value, last[1][key]), key
    for which in ("valid", "test"):
        resumed[which].pop("seconds"), whole[which].pop("seconds")
        assert resumed[which] == whole[which]


def test_adamw_fuses_float_parameters_and_matches_the_unfused_update():
    """The fused kernel where torch has it (CPU floats), the loop otherwise; the same AdamW update."""
    weights = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    grads = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(1))
    results = []
    for make in (
        lambda p: adamw(p, lr=0.1, weight_decay=0.1),
        lambda p: torch.optim.AdamW(p, lr=0.1, weight_decay=0.1),
    ):
        param = torch.nn.Parameter(weights.clone())
        optimizer = make([param])
        for grad in grads:
            param.grad = grad.clone()
            optimizer.step()
        results.append((optimizer, param.detach()))
    assert results[0][0].defaults["fused"] and not results[1][0].defaults["fused"]
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-6, atol=1e-6)
    complex_param = torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))
    assert not adamw([complex_param], lr=0.1).defaults["fused"]
