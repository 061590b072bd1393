"""Bad input gets a clear error naming the problem, and nothing half-written is left behind."""

import shutil

import pytest

from genrec.config import load_config
from genrec.data import prepare as prepare_module
from genrec.data import prepare_dataset
from genrec.data.dataset import Dataset
from genrec.errors import ConfigError, DataError

from conftest import write_lines


def ml100k_copy(data_dir, tmp_path):
    raw = tmp_path / "ml-100k"
    shutil.copytree(data_dir / "ml-100k", raw)
    return raw


def test_malformed_line_is_named_by_file_and_number(data_dir, tmp_path):
    raw = ml100k_copy(data_dir, tmp_path)
    lines = (raw / "u.data").read_text().splitlines()
    lines[4999] = "196\t242\t3"  # line 5000 lost its timestamp
    write_lines(raw / "u.data", lines)
    with pytest.raises(DataError, match=r"u\.data, line 5000: expected 4 fields"):
        prepare_dataset("ml-100k", tmp_path / "out", raw=raw)
    lines[4999] = "196\tabc\t3\t881250949"
    write_lines(raw / "u.data", lines)
    with pytest.raises(DataError, match=r"u\.data, line 5000: field 'item' should be int, got 'abc'"):
        prepare_dataset("ml-100k", tmp_path / "out", raw=raw)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == [raw]  # no temp folders left


def test_malformed_metadata_line(data_dir, tmp_path):
    raw = ml100k_copy(data_dir, tmp_path)
    lines = (raw / "u.item").read_text(encoding="latin-1").splitlines()
    lines[9] = lines[9].rsplit("|", 3)[0]
    write_lines(raw / "u.item", lines, encoding="latin-1")
    with pytest.raises(DataError, match=r"u\.item, line 10: expected 24 fields"):
        prepare_dataset("ml-100k", tmp_path / "out", raw=raw)


def test_missing_files_and_folders(data_dir, tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no such directory"):
        prepare_dataset("ml-100k", tmp_path / "out", raw=tmp_path / "nowhere")
    raw = ml100k_copy(data_dir, tmp_path)
    (raw / "u.item").unlink()
    with pytest.raises(DataError, match="missing u.item"):
        prepare_dataset("ml-100k", tmp_path / "out", raw=raw)
    write_lines(tmp_path / "e.csv", ["user_id,item_id,timestamp", "1,1,1"])
    with pytest.raises(DataError, match=r"missing file: .*none\.csv"):
        prepare_dataset("csv", tmp_path / "out", raw=tmp_path / "e.csv", items=str(tmp_path / "none.csv"))
    with pytest.raises(DataError, match="is a directory; the csv source needs the interactions file"):
        prepare_dataset("csv", tmp_path / "out", raw=raw)
    with pytest.raises(DataError, match="not a genrec dataset"):
        Dataset.load(tmp_path)


def test_no_local_copy_and_no_download_says_both_ways(tmp_path, monkeypatch):
    monkeypatch.setenv("GENREC_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(DataError) as err:
        prepare_dataset("ml-1m", tmp_path / "out", download=False)
    message = str(err.value)
    assert "--raw PATH" in message and "GENREC_DATA_DIR" in message and "ml-1m/ratings.dat" in message


def test_wrong_column_name_lists_the_columns(tmp_path):
    write_lines(tmp_path / "e.csv", ["uid,iid,ts", "1,1,1"])
    with pytest.raises(
        DataError, match=r"no column 'user_id', 'item_id', 'timestamp'; the header has 'uid', 'iid', 'ts'"
    ):
        prepare_dataset("csv", tmp_path / "out", raw=tmp_path / "e.csv")
    with pytest.raises(ConfigError, match="unknown option 'user_column'.*valid options: user_col"):
        prepare_dataset("csv", tmp_path / "out", raw=tmp_path / "e.csv", user_column="uid")


def test_unknown_source_model_and_config_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown source 'ml-2m'; valid sources: .*ml-100k"):
        prepare_dataset("ml-2m", tmp_path / "out")
    with pytest.raises(ConfigError, match="unknown model 'sasrek'; valid models: popularity"):
        load_config(None, ["model.name=sasrek"])
    with pytest.raises(ConfigError, match="unknown config key 'eval.k'; valid keys of eval: ks, batch_size"):
        load_config(None, ["eval.k=[10]"])
    with pytest.raises(ConfigError, match="data.user_core: expected an integer, got 'five'"):
        load_config(None, ["data.user_core=five"])
    with pytest.raises(ConfigError, match="split.protocol: expected one of 'auto' | 'leave-one-out'"):
        load_config(None, ["split.protocol=loo"])


def test_existing_output_is_refused_unless_overwrite(data_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty.*--overwrite"):
        prepare_dataset("ml-100k", out, raw=data_dir / "ml-100k")
    assert (out / "keep.txt").read_text() == "mine"
    prepare_dataset("ml-100k", out, raw=data_dir / "ml-100k", overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "manifest.json").is_file()


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_interrupted_prepare_leaves_no_partial_dataset(data_dir, tmp_path, monkeypatch, error):
    def crash(canonical, folder):
        (folder / "interactions.parquet").write_bytes(b"partial")
        raise error("stopped while writing")

    monkeypatch.setattr(prepare_module, "write_canonical", crash)
    with pytest.raises(error):
        prepare_dataset("ml-100k", tmp_path / "out", raw=data_dir / "ml-100k")
    assert list(tmp_path.iterdir()) == []
    # an existing dataset survives a crashed --overwrite untouched
    monkeypatch.undo()
    prepare_dataset("ml-100k", tmp_path / "out", raw=data_dir / "ml-100k")
    monkeypatch.setattr(prepare_module, "write_canonical", crash)
    with pytest.raises(error):
        prepare_dataset("ml-100k", tmp_path / "out", raw=data_dir / "ml-100k", overwrite=True)
    assert Dataset.load(tmp_path / "out").num_interactions == 100000
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_prepared_formats_bad_input(data_dir, tmp_path):
    # a typed header with the wrong type
    sci = tmp_path / "sci"
    shutil.copytree(data_dir / "amazon-scientific", sci)
    lines = (sci / "Scientific.valid.inter").read_text().splitlines()
    write_lines(sci / "Scientific.valid.inter", ["user_id:token\titem_id_list:float\titem_id:token", *lines[1:]])
    with pytest.raises(
        DataError, match=r"Scientific\.valid\.inter, line 1: column 'item_id_list' has type float, expected token_seq"
    ):
        prepare_dataset("recbole", tmp_path / "out", raw=sci)
    write_lines(sci / "Scientific.valid.inter", [lines[0], *lines[1:5], "3\t1 2 3", *lines[6:]])
    with pytest.raises(DataError, match=r"Scientific\.valid\.inter, line 6: expected 3 tab-separated fields, got 2"):
        prepare_dataset("recbole", tmp_path / "out", raw=sci)
    # MiniOneRec: a history that is not a list, an item missing from item.json, an inconsistent window
    mini = tmp_path / "mini"
    mini.mkdir()
    for suffix in ("item.json", "index.json", "valid.csv"):
        shutil.copy(data_dir / "minionerec" / f"Office_Products.{suffix}", mini / f"Office_Products.{suffix}")
    header, first, *rest = (mini / "Office_Products.valid.csv").read_text().splitlines()
    assert first.startswith("A994,")
    write_lines(mini / "Office_Products.valid.csv", [header, first.replace('"[2122, 243, 811, 812]"', "2122"), *rest])
    with pytest.raises(
        DataError, match=r"Office_Products\.valid\.csv, line 2: history_item_id is not a list of item ids: '2122'"
    ):
        prepare_dataset("minionerec", tmp_path / "out", raw=mini)
    write_lines(mini / "Office_Products.valid.csv", [header, first.replace(",2280,", ",99999,"), *rest])
    with pytest.raises(
        DataError, match=r"Office_Products\.valid\.csv, line 2: item_id 99999 is not in Office_Products\.item\.json"
    ):
        prepare_dataset("minionerec", tmp_path / "out", raw=mini)
    second = first.replace('"[2122, 243, 811, 812]"', '"[1, 2]"')
    write_lines(mini / "Office_Products.valid.csv", [header, first, second, *rest])
    with pytest.raises(DataError, match=r"line 3: the history of user 'A994' does not continue their earlier rows"):
        prepare_dataset("minionerec", tmp_path / "out", raw=mini)
    with pytest.raises(ConfigError, match="comes with its own split; filters cannot be applied"):
        from genrec.data import Filters

        prepare_dataset("recbole", tmp_path / "out", raw=data_dir / "amazon-scientific", filters=Filters(user_core=5))
    assert not (tmp_path / "out").exists()
