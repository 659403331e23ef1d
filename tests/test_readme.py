"""The Python blocks of README's "Library use" run, in order, on a tiny model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import SENTENCES

README = Path(__file__).resolve().parent.parent / "README.md"


def library_blocks() -> list[str]:
    """The ```python blocks between "## Library use" and the next "## " heading."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Library use"):]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.filterwarnings("ignore:.*has no token of its own:UserWarning")  # ' Paris' is <unk> to the tiny tokenizer
@pytest.mark.filterwarnings("ignore:with 2 languages no z-score:UserWarning")
def test_readme_library_blocks_run(tmp_path, monkeypatch, tiny_hub_model):
    import hubclient.models

    blocks = library_blocks()
    assert len(blocks) == 4  # logit lens, similarity, patching, neurons
    model = tiny_hub_model("llama")
    monkeypatch.setattr(hubclient.models, "load_model", lambda name, *a, **k: model)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "en.txt").write_text("\n".join(SENTENCES[:6]) + "\n", encoding="utf-8")
    (tmp_path / "fr.txt").write_text("\n".join(reversed(SENTENCES[:6])) + "\n", encoding="utf-8")
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
        assert namespace["run"].manifest["status"] == "complete"
    assert len(list((tmp_path / "results").iterdir())) == 4
