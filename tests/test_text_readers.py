"""Text files read as an editor shows them (issue "Nothing silently wrong"): a byte-order mark
is not part of line 1, lines end at ``\\n`` / ``\\r\\n`` only, and ``--n`` follows one rule.

What would fail: reading as ``utf-8`` (the BOM becomes a character of prompt 1),
``str.splitlines()`` (U+2028, ``\\x0b``, ``\\x0c``, ``\\x1c``–``\\x1e``, ``\\x85`` split a line,
misaligning parallel files), or taking the first ``n`` of fewer prompts silently.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hubclient.errors import HubError
from hubclient.inputs import read_lines, read_prompts, split_lines, take_first
from hubclient.inputs.parallel import read_parallel_files

#: characters str.splitlines() breaks on besides \n and \r
SEPARATORS = ["\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85"]
line_text = st.text(alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=30).map(
    lambda s: s.lstrip("\ufeff")
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(line_text | st.sampled_from(SEPARATORS), min_size=1, max_size=8), crlf=st.booleans(), bom=st.booleans(), final=st.booleans())
def test_lines_are_what_an_editor_shows(tmp_path, lines, crlf, bom, final):
    """Any lines (arbitrary Unicode, separators, BOM, CRLF, with or without a final newline)
    read back as written. Without a final newline a last empty line cannot be told from a
    final newline, in an editor as here, so that one case is not generated."""
    assume(final or lines[-1] != "")
    end = "\r\n" if crlf else "\n"
    text = end.join(lines) + (end if final else "")
    path = tmp_path / "p.txt"
    path.write_bytes((("\ufeff" if bom else "") + text).encode("utf-8"))
    assert read_lines(path) == lines
    assert split_lines(("\ufeff" if bom else "") + text) == lines


def test_bom_is_not_part_of_prompt_one(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes("\ufeffthe cat sat\nparis\n".encode("utf-8"))
    assert read_prompts(file=path) == ["the cat sat", "paris"]


def test_separators_inside_a_line_keep_parallel_files_aligned(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("one\u2028two\nthree\n", encoding="utf-8")  # 2 lines (str.splitlines: 3)
    b.write_text("uno\ndos\ntres\n", encoding="utf-8")
    with pytest.raises(HubError, match="2.*3|3.*2"):
        read_parallel_files([a, b])


def test_n_has_one_rule():
    assert take_first([1, 2, 3], 2, "prompts") == [1, 2]
    assert take_first([1, 2, 3], None, "prompts") == [1, 2, 3]
    with pytest.raises(HubError, match="--n 5 is more than the 3 prompts"):
        take_first([1, 2, 3], 5, "prompts")
    with pytest.raises(HubError, match="--n 5 is more than the 2 prompts"):
        read_prompts(["a", "b"], n=5)
