"""Reading parallel corpora: alignment kept, every bad input one clear HubError."""

from __future__ import annotations

import pytest

from hubclient.errors import HubError
from hubclient.parallel import flores_codes, looks_like_flores_code, read_flores, read_parallel_files


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def flores(tmp_path):
    folder = tmp_path / "flores"
    folder.mkdir()
    write(folder / "eng_Latn.devtest", ["one", "two", "three", "four"])
    write(folder / "spa_Latn.devtest", ["uno", "dos", "tres", "cuatro"])
    write(folder / "zho_Hans.devtest", ["一", "二", "三", "四"])
    return folder


def test_files_are_read_aligned_and_named_after_their_stem(tmp_path):
    a = write(tmp_path / "en.txt", ["the cat", "a dog", "paris"])
    b = write(tmp_path / "fr.txt", ["le chat", "un chien", "paris"])
    corpus = read_parallel_files([a, b])
    assert corpus.languages == ["en", "fr"]
    assert corpus.texts == [["the cat", "a dog", "paris"], ["le chat", "un chien", "paris"]]
    assert corpus.sentences == [0, 1, 2] and corpus.n == 3
    texts, languages, sentences = corpus.flat()
    assert texts == ["the cat", "a dog", "paris", "le chat", "un chien", "paris"]
    assert languages == ["en"] * 3 + ["fr"] * 3
    assert sentences == [0, 1, 2, 0, 1, 2]


def test_lines_are_not_stripped_and_crlf_is_a_line_end(tmp_path):
    a = tmp_path / "a.txt"
    a.write_bytes(b"  padded  \r\nsecond\r\n")
    b = write(tmp_path / "b.txt", ["x", "y"])
    corpus = read_parallel_files([a, b])
    assert corpus.texts[0] == ["  padded  ", "second"]


def test_first_n(tmp_path):
    a = write(tmp_path / "a.txt", ["1", "2", "3", "4"])
    b = write(tmp_path / "b.txt", ["1", "2", "3", "4"])
    assert read_parallel_files([a, b], n=2).texts == [["1", "2"], ["1", "2"]]


def test_different_lengths_name_both_files_and_counts(tmp_path):
    a = write(tmp_path / "a.txt", ["1", "2", "3"])
    b = write(tmp_path / "b.txt", ["1", "2"])
    with pytest.raises(HubError, match=r"a\.txt has 3 lines, .*b\.txt has 2"):
        read_parallel_files([a, b])


def test_empty_lines_are_reported_with_line_numbers(tmp_path):
    a = write(tmp_path / "a.txt", ["1", "", "3", "  ", "5"])
    b = write(tmp_path / "b.txt", ["1", "2", "3", "4", "5"])
    with pytest.raises(HubError, match=r"a\.txt: empty line\(s\) 2, 4; .*--skip-empty"):
        read_parallel_files([a, b])
    assert read_parallel_files([a, b], n=3, skip_empty=True).sentences == [0, 2, 4]
    c = write(tmp_path / "c.txt", ["1", "2", "3", "", "5"])
    assert read_parallel_files([c, b], n=3).sentences == [0, 1, 2]  # only the lines used are checked


def test_skip_empty_drops_the_line_from_every_language(tmp_path):
    a = write(tmp_path / "a.txt", ["a1", "", "a3", "a4", "a5"])
    b = write(tmp_path / "b.txt", ["b1", "b2", "b3", " ", "b5"])
    corpus = read_parallel_files([a, b], skip_empty=True)
    assert corpus.sentences == [0, 2, 4]
    assert corpus.texts == [["a1", "a3", "a5"], ["b1", "b3", "b5"]]
    assert read_parallel_files([a, b], skip_empty=True, n=2).texts == [["a1", "a3"], ["b1", "b3"]]
    with pytest.raises(HubError, match=r"--n 4 is larger than the data: .* 3 non-empty lines"):
        read_parallel_files([a, b], skip_empty=True, n=4)


@pytest.mark.parametrize(
    "lines, kwargs, message",
    [
        (["1", "2"], {"n": 5}, r"--n 5 is larger than the data: .*has 2 lines; use --n 2"),
        (["only"], {}, r"at least 2 sentences"),
        (["1", "2"], {"n": 1}, r"--n must be at least 2"),
    ],
)
def test_sizes(tmp_path, lines, kwargs, message):
    a = write(tmp_path / "a.txt", lines)
    b = write(tmp_path / "b.txt", lines)
    with pytest.raises(HubError, match=message):
        read_parallel_files([a, b], **kwargs)


def test_fewer_than_two_languages_missing_and_duplicate_files(tmp_path):
    a = write(tmp_path / "a.txt", ["1", "2"])
    with pytest.raises(HubError, match="at least 2 parallel files"):
        read_parallel_files([a])
    with pytest.raises(HubError, match="does not exist"):
        read_parallel_files([a, tmp_path / "nope.txt"])
    (tmp_path / "x").mkdir()
    dup = write(tmp_path / "x" / "a.txt", ["1", "2"])
    with pytest.raises(HubError, match="both named 'a'"):
        read_parallel_files([a, dup])
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00bad\n")
    with pytest.raises(HubError, match="not UTF-8"):
        read_parallel_files([a, bad])


def test_flores_codes(flores):
    corpus = read_flores(["zho_Hans", "eng_Latn"], flores, n=3)
    assert corpus.languages == ["zho_Hans", "eng_Latn"]
    assert corpus.texts == [["一", "二", "三"], ["one", "two", "three"]]
    assert flores_codes(flores) == ["eng_Latn", "spa_Latn", "zho_Hans"]
    assert looks_like_flores_code("zho_Hans") and not looks_like_flores_code("data/zh.txt")


def test_flores_errors(flores, tmp_path):
    with pytest.raises(HubError, match=r"unknown FLORES code 'fra_Latn'.*available: eng_Latn spa_Latn zho_Hans"):
        read_flores(["eng_Latn", "fra_Latn"], flores)
    with pytest.raises(HubError, match="need --flores-dir"):
        read_flores(["eng_Latn", "spa_Latn"], None)
    with pytest.raises(HubError, match="is not a folder"):
        read_flores(["eng_Latn", "spa_Latn"], tmp_path / "missing")
    with pytest.raises(HubError, match="at least 2 languages"):
        read_flores(["eng_Latn"], flores)
    with pytest.raises(HubError, match="both named 'eng_Latn'"):
        read_flores(["eng_Latn", "eng_Latn"], flores)


def test_real_flores_is_aligned(flores_dir):
    corpus = read_flores(["eng_Latn", "zho_Hans", "spa_Latn"], flores_dir)
    assert corpus.n == 1012
    assert all(len(lines) == 1012 for lines in corpus.texts)
