"""``--dataset NAME[:CONFIG][:SPLIT]``: prompts from a Hugging Face dataset (a local folder here)."""

from __future__ import annotations

import sys

import polars as pl
import pytest
from typer.testing import CliRunner

from hubclient.cli import app
from hubclient.errors import HubError
from hubclient.inputs.prompts import read_prompts

pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture
def folder(tmp_path):
    """A dataset folder with one split: train.csv (columns sentence, label)."""
    path = tmp_path / "data"
    path.mkdir()
    (path / "train.csv").write_text("sentence,label\nthe cat sat on the mat,1\nparis,0\none two three,1\n", encoding="utf-8")
    return path


def test_reads_the_column_of_the_only_split(folder):
    assert read_prompts(dataset=str(folder), column="sentence") == ["the cat sat on the mat", "paris", "one two three"]
    assert read_prompts(["a b"], dataset=f"{folder}:train", column="sentence", n=2) == ["a b", "the cat sat on the mat"]
    assert read_prompts(dataset=f"{folder}::train", column="sentence") == ["the cat sat on the mat", "paris", "one two three"]


@pytest.mark.parametrize(
    ("spec", "column", "fragments"),
    [
        (":test", "sentence", ["no split or configuration 'test'", "its splits: train"]),
        ("::test", "sentence", ["has no split 'test'", "its splits: train"]),
        ("", None, ["has no column 'text'", "its columns: sentence, label", "--column"]),
        ("", "label", ["row 1 of column 'label' is not text"]),
        ("/missing", None, ["does not load"]),
    ],
)
def test_errors_name_the_fix(folder, spec, column, fragments):
    with pytest.raises(HubError) as error:
        read_prompts(dataset=f"{folder}{spec}", column=column)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_several_splits_need_one_named(folder):
    (folder / "test.csv").write_text("sentence\nparis\n", encoding="utf-8")
    with pytest.raises(HubError, match="several splits"):
        read_prompts(dataset=str(folder), column="sentence")
    assert read_prompts(dataset=f"{folder}:test", column="sentence") == ["paris"]


def test_file_and_dataset_together_is_an_error(folder, tmp_path):
    (tmp_path / "p.txt").write_text("x\n", encoding="utf-8")
    with pytest.raises(HubError, match="not both"):
        read_prompts(file=tmp_path / "p.txt", dataset=str(folder))


def test_missing_library_names_the_extra(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(HubError, match=r"pip install 'hub\[hf\]'"):
        read_prompts(dataset=str(folder))


def test_logit_lens_cli_reads_a_dataset(tmp_path, tiny_dir, folder):
    result = CliRunner().invoke(app, [
        "analyze", "logit-lens", "--model", str(tiny_dir("llama")), "--out", str(tmp_path / "out"), "--no-progress", "--no-plots",
        "--dataset", f"{folder}:train", "--column", "sentence", "--n", "2", "--name", "d",
    ])
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(tmp_path / "out" / "d" / "prompts.parquet")["text"].to_list() == ["the cat sat on the mat", "paris"]
    bad = CliRunner().invoke(app, [
        "analyze", "logit-lens", "--model", str(tiny_dir("llama")), "--out", str(tmp_path / "out"), "--no-progress",
        "--dataset", str(folder), "--column", "nope",
    ])
    assert bad.exit_code == 2 and "has no column 'nope'" in bad.output and "sentence, label" in bad.output
