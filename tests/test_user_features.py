"""User features as prefix tokens before the history (SASRec, HSTU): what the model reads, what it
never scores, unknown users, old checkpoints, and bad configs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genrec.checkpoints import load_weights, save_checkpoint
from genrec.cli import main
from genrec.config import load_config
from genrec.data.feature_tables import OOV, fit_features
from genrec.errors import ConfigError
from genrec.models.hstu import RelativeBias, prefixed_bias
from genrec.models.user_features import UserFeaturePrefix
from genrec.runner import build_model, split_for
from genrec.serve.recommender import Recommender

from conftest import TINY_SASREC

USER_FEATURES = "model.user_features=[gender, age, occupation]"
TINY_HSTU = [
    "model.name=hstu",
    "model.max_len=20",
    "model.dim=16",
    "model.attention_dim=8",
    "model.value_dim=8",
    "train.batch_size=256",
    "train.loss.num_negatives=16",
    "train.device=cpu",
    "eval.ks=[10]",
    "train.patience=null",
]


def _config(ml100k, model, *extra):
    return load_config(None, [f"data.path={ml100k.path}", *(TINY_SASREC if model == "sasrec" else TINY_HSTU), *extra])


def _strong_prefix(model) -> None:
    """Give the prefix tables large random weights, so that a user's features visibly move the output."""
    with torch.no_grad():
        for table in model.user_prefix.tables.values():
            table.weight.normal_(0, 1.0)
        if getattr(model, "prefix_bias", None) is not None:
            model.prefix_bias.normal_(0, 1.0)


def _differing_users(ml100k) -> tuple[int, int]:
    """Two users whose gender, age and occupation all differ."""
    users = ml100k.users.to_pylist()
    first = users[0]
    other = next(u for u in users if all(u[k] != first[k] for k in ("gender", "age", "occupation")))
    return first["user"], other["user"]


@pytest.mark.parametrize("model_name", ["sasrec", "hstu"])
def test_the_prefix_changes_every_position_and_is_never_scored(ml100k, model_name):
    config = _config(ml100k, model_name, USER_FEATURES)
    model = build_model(ml100k, config).eval()
    assert model.user_prefix.names == ["gender", "age", "occupation"] and model.user_prefix.num_tokens == 3
    _strong_prefix(model)
    a, b = _differing_users(ml100k)
    items = torch.tensor([[5, 9, 2, 0], [5, 9, 2, 0]])
    times = torch.tensor([[100, 200, 300, 0], [100, 200, 300, 0]])
    lengths = torch.tensor([3, 3])
    out = model.encode(items, times, lengths, None, torch.tensor([a, b]))
    assert out.shape == (2, 4, 16)  # the history's positions only: the prefix outputs are dropped
    for position in range(3):  # every history position, the first included, sees the user's tokens
        assert not torch.allclose(out[0, position], out[1, position], atol=1e-4)
    same = model.encode(items, times, lengths, None, torch.tensor([a, a]))
    torch.testing.assert_close(same[0], same[1])
    # causal: a later item changes nothing before it, prefix or not
    later = model.encode(torch.tensor([[5, 9, 7, 0]]), times[:1], lengths[:1], None, torch.tensor([a]))
    torch.testing.assert_close(later[0, :2], out[0, :2])
    # scoring: the item table is the items' (N+1 rows), prefix tokens are no candidates
    assert model.scorer().item_table.shape == (ml100k.num_items + 1, 16)


def test_hstu_keeps_the_history_bias_and_gives_the_prefix_its_own():
    relative = RelativeBias(max_len=6, time_buckets=8, position_bias=True)
    times = torch.tensor([[10, 50, 400, 9000]])
    history = relative(times, times)  # [1, 1, 4, 4]
    weights = torch.tensor([0.5, -1.0])
    full = prefixed_bias(history, weights)
    assert full.shape == (1, 1, 6, 6)
    torch.testing.assert_close(full[:, :, 2:, 2:], history)  # positions and time gaps among history events
    torch.testing.assert_close(full[0, 0, 2:, :2], weights.expand(4, 2))  # history -> prefix token p
    assert torch.all(full[:, :, :2, :] == 0)


def test_unknown_users_and_values_unseen_in_training_go_to_the_oov_vector(ml100k):
    config = _config(ml100k, "sasrec", USER_FEATURES)
    full = ml100k.sequences
    genders = np.array([None, *ml100k.users["gender"].to_pylist()])
    # training events of the men only: "F" is not in the vocabulary (fitted on training users)
    ends = np.where(genders == "M", full.offsets[1:], full.offsets[:-1])
    tables = fit_features(ml100k, full.prefixes(ends), item=[], user=["gender"])
    gender = tables.user["gender"]
    assert gender.vocab == ["M"] and gender.ids[np.flatnonzero(genders == "F")[0]] == OOV
    prefix = UserFeaturePrefix(ml100k.num_users, 16, tables.user)
    with torch.no_grad():
        prefix.tables["gender"].weight.normal_()
    woman, man = int(np.flatnonzero(genders == "F")[0]), int(np.flatnonzero(genders == "M")[0])
    tokens = prefix(torch.tensor([0, woman, man, ml100k.num_users + 7]))  # unknown, OOV value, known, out of range
    oov = prefix.tables["gender"].weight[OOV] * 4.0  # scaled by sqrt(16)
    for row in (0, 1, 3):
        torch.testing.assert_close(tokens[row, 0], oov)
    assert not torch.allclose(tokens[2, 0], oov)
    assert gender.ids[0] == 0  # the fitted table is untouched: only the prefix maps the unknown user to OOV
    # a model reading user features answers a request whose user it does not know
    model = build_model(ml100k, config).eval()
    vectors = model.last_user_vectors(torch.tensor([[5, 9]]), torch.tensor([[1, 2]]), torch.tensor([2]), None, None)
    assert torch.isfinite(vectors).all()


def test_hstu_with_user_features_keeps_the_padded_layout(ml100k):
    model = build_model(ml100k, _config(ml100k, "hstu", USER_FEATURES))
    assert not model.packs_tokens(torch.device("cpu"))  # auto: the prefix tokens need the padded layout
    with pytest.raises(ConfigError, match="token_layout: packed tokens do not take user features"):
        build_model(ml100k, _config(ml100k, "hstu", USER_FEATURES, "model.token_layout=packed"))


def test_checkpoints_and_configs_without_user_features_still_load(ml100k, tmp_path):
    config = _config(ml100k, "hstu")
    assert config.model.user_features == [] and not config.model.fits_features
    model = build_model(ml100k, config)
    assert model.user_prefix is None and not any("prefix" in key for key in model.state_dict())
    save_checkpoint(tmp_path / "best.pt", {"model": model.state_dict()})
    again = build_model(ml100k, _config(ml100k, "hstu", "seed=3"))
    load_weights(again, tmp_path / "best.pt")
    torch.testing.assert_close(again.state_dict(), model.state_dict())


def test_user_feature_config_errors(ml100k):
    config = _config(ml100k, "hstu", "model.user_features=[gender, income]")
    with pytest.raises(ConfigError, match="no user feature 'income'.*age \\(sparse\\), gender \\(sparse\\)"):
        build_model(ml100k, config)
    with pytest.raises(ConfigError, match="model.user_features names 'gender' twice"):
        _config(ml100k, "sasrec", "model.user_features=[gender, gender]")


def test_a_user_feature_model_trains_evaluates_and_serves(ml100k, tmp_path, capsys):
    out = tmp_path / "run"
    sets = [*TINY_HSTU, USER_FEATURES, "train.epochs=2", f"data.path={ml100k.path}"]
    assert (
        main(["train", *[a for s in sets for a in ("--set", s)], "--out", str(out), "--json", "-q", "--threads", "1"])
        == 0
    )
    trained = json.loads(capsys.readouterr().out)["test"]
    # `genrec eval` rebuilds the prefix with the same vocabularies and reads each case's user
    assert main(["eval", str(out), "--json", "-q", "--threads", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["ndcg@10"] == pytest.approx(trained["ndcg@10"])
    recommender = Recommender.from_run(out)
    history = [str(i) for i in (50, 172, 133)]
    known = recommender.recommend(history, k=5, user="1")
    unknown = recommender.recommend(history, k=5, user="no-such-user")
    assert len(known.items) == len(unknown.items) == 5 and not unknown.fallback
    assert recommender.user_of("no-such-user") == 0 and recommender.user_of("1") == 1
    model = recommender.scorer.model
    split = split_for(ml100k, load_config(out / "config.json"))
    assert model.user_prefix.values("gender")[1] >= 2 and split.train.lengths[1] > 0  # user 1: in vocabulary
