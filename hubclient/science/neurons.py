"""Neuron-level statistics of "Converging to a Lingua Franca" (Zeng et al., COLING 2025) and LAPE.

Model-free and run-free numpy on MLP activations (the input of the MLP down projection,
``[sentences, d_ff]`` per layer, see :meth:`hubclient.models.HubModel.mlp_down`):

* :func:`group_contrast`, :func:`lrds`, :func:`sads` — mean cosine of pairs inside a group minus
  mean cosine of pairs across groups (Zeng et al. 2025: LRDS groups by language, SADS by
  meaning); self-pairs are never counted;
* :func:`coactivation_scores`, :func:`zscores`, :func:`key_neurons` — the "key linguistic
  neurons" of Zeng et al. 2025: per language, the mean co-activation of a neuron over
  the language's sentence pairs, z-scored across languages, key when ``z > 2``;
* :func:`lape` — language activation probability entropy (Tang et al., ACL 2024, "Language-
  Specific Neurons", and their released ``identify.py``): low entropy of the
  activation probabilities over languages marks a language-specific neuron.

Everything is computed in float64 and never builds an ``[N, N]`` cosine matrix: a sum of cosines
over pairs is a squared norm of summed unit vectors, ``sum_{i != j} u_i·u_j = |sum_i u_i|^2 -
sum_i |u_i|^2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from hubclient.errors import HubError


@dataclass(frozen=True)
class GroupContrast:
    """Within-group minus between-group mean cosine (one LRDS or SADS value).

    Attributes:
        score: ``same - different`` (cosine units).
        same: mean cosine over ordered pairs ``(i, j)``, ``i != j``, with the same label.
        different: mean cosine over ordered pairs with different labels.
        n_same / n_different: number of ordered pairs in each mean.
    """

    score: float
    same: float
    different: float
    n_same: int
    n_different: int


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (``[N, d]``) scaled to unit L2 norm (float64); a zero row stays zero
    (cosine 0 with everything, as :func:`hubclient.science.stats.cosine_matrix`).

    Raises:
        HubError: ``x`` is not 2-D.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise HubError(f"vectors must be a [N, d] array, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _pair_sum(units: np.ndarray) -> float:
    """``sum_{i != j} cos(x_i, x_j)`` over ordered pairs of the rows of ``units``."""
    total = units.sum(axis=0)
    return float(total @ total - np.einsum("nd,nd->", units, units))


def _within_groups(units: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
    """``(sum of cosines, number)`` of the ordered pairs ``i != j`` whose labels are equal."""
    total, count = 0.0, 0
    for group in np.unique(labels):
        members = units[labels == group]
        total += _pair_sum(members)
        count += members.shape[0] * (members.shape[0] - 1)
    return total, count


def _labels(labels: Sequence, n: int, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise HubError(f"need one {what} label per vector: got {labels.shape[0] if labels.ndim else 0} labels for {n} vectors")
    return labels


def group_contrast(vectors: np.ndarray, labels: Sequence) -> GroupContrast:
    """Mean cosine of same-label pairs minus mean cosine of different-label pairs.

    Args:
        vectors: ``[N, d]`` (e.g. token-mean MLP activations of one layer, one row per sentence).
        labels: ``[N]`` group of each row (language, or sentence id).

    Returns:
        :class:`GroupContrast`; pairs are ordered ``(i, j)`` with ``i != j`` (self-pairs excluded),
        which gives the same means as unordered pairs.

    Raises:
        HubError: labels that do not match the rows, fewer than 2 rows, or no pair with the same
            (or with a different) label.
    """
    units = unit_rows(vectors)
    n = units.shape[0]
    labels = _labels(labels, n, "group")
    if n < 2:
        raise HubError(f"need at least 2 vectors to compare pairs, got {n}")
    all_pairs = _pair_sum(units)
    same_sum, n_same = _within_groups(units, labels)
    n_diff = n * (n - 1) - n_same
    if n_same == 0 or n_diff == 0:
        raise HubError("need pairs both inside and across groups (at least two groups, one with 2 or more members)")
    same = same_sum / n_same
    different = (all_pairs - same_sum) / n_diff
    return GroupContrast(same - different, same, different, n_same, n_diff)


def lrds(vectors: np.ndarray, languages: Sequence[str], sentences: Sequence[int] | None = None) -> GroupContrast:
    """LRDS of one layer (Zeng et al. 2025; ``LinguaFranca/run.py`` ``show_cos_sim``, lines 223-255).

    With ``sentences`` (the released code's pair sets, ``paper-protocols.md`` §B2)::

        LRDS = mean cos(same language, different sentence) - mean cos(different language, different sentence)

    Self pairs are excluded, and translation pairs (same sentence, different language) are
    excluded from the cross-language term: the released code masks the diagonal of every S×S
    block of the language-ordered cosine matrix, and the diagonals of the off-diagonal blocks
    are exactly the translations. Without ``sentences`` the cross-language term is every pair of
    different languages, translations included (hub's earlier definition).

    Args:
        vectors: ``[N, d]``, one row per (language, sentence).
        languages: ``[N]`` language of each row.
        sentences: ``[N]`` sentence id of each row (rows must be unique (language, sentence)).

    Returns:
        :class:`GroupContrast` (cosine units).

    Raises:
        HubError: as :func:`group_contrast` and :func:`cross_language_baseline`.
    """
    within = group_contrast(vectors, languages)
    if sentences is None:
        return within
    cross = cross_language_baseline(vectors, languages, sentences)
    units = unit_rows(vectors)
    n = units.shape[0]
    n_sent = _within_groups(units, _labels(sentences, n, "sentence"))[1]
    return GroupContrast(within.same - cross, within.same, cross, within.n_same, within.n_different - n_sent)


def sads(vectors: np.ndarray, sentences: Sequence[int]) -> GroupContrast:
    """SADS of one layer (Zeng et al. 2025): semantic alignment, as the paper defines it.

    ``SADS = mean_{i != j, sent_i = sent_j} cos(x_i, x_j) - mean_{sent_i != sent_j} cos(x_i, x_j)``.
    With one row per (language, sentence), the same-meaning pairs are exactly the translations
    of a sentence (always different languages); the different-meaning pairs are all pairs of
    different sentence ids, same-language pairs included. (The paper's released code groups these
    pairs differently; this follows the definition.) High where activations cluster by meaning.

    Args:
        vectors: ``[N, d]``, one row per (language, sentence).
        sentences: ``[N]`` sentence id of each row (line number in the parallel corpus).

    Raises:
        HubError: as :func:`group_contrast`.
    """
    return group_contrast(vectors, sentences)


def cross_language_baseline(vectors: np.ndarray, languages: Sequence[str], sentences: Sequence[int]) -> float:
    """Mean cosine over pairs with different sentence ids *and* different languages.

    A language-controlled alternative to SADS' different-meaning mean (which also holds
    same-language pairs): ``SADS_x = same-meaning mean - this``. Rows must be unique
    (language, sentence) pairs.

    Raises:
        HubError: labels that do not match the rows, or no such pair.
    """
    units = unit_rows(vectors)
    n = units.shape[0]
    languages = _labels(languages, n, "language")
    sentences = _labels(sentences, n, "sentence")
    total = _pair_sum(units)
    same_lang, n_lang = _within_groups(units, languages)
    same_sent, n_sent = _within_groups(units, sentences)
    count = n * (n - 1) - n_lang - n_sent
    if count <= 0:
        raise HubError("no pair has both a different language and a different sentence")
    return (total - same_lang - same_sent) / count


def coactivation_scores(vectors: np.ndarray) -> np.ndarray:
    """Per-neuron mean co-activation over a language's sentence pairs (Zeng et al. 2025).

    Each sentence's vector is L2-normalised (``u_i = x_i / |x_i|``); neuron ``k``'s score is
    ``mean_{i != j} u_i[k] u_j[k]`` over the language's sentence pairs (self-pairs excluded).
    Summed over neurons it is the language's mean within-language cosine, so the score says how
    much each neuron contributes to the language's similarity.

    Args:
        vectors: ``[n, d_ff]`` activations of one language at one layer (n >= 2 sentences).

    Returns:
        ``[d_ff]`` float64.

    Raises:
        HubError: fewer than 2 sentences.
    """
    units = unit_rows(vectors)
    n = units.shape[0]
    if n < 2:
        raise HubError(f"co-activation needs at least 2 sentences of a language, got {n}")
    total = units.sum(axis=0)
    return (total * total - (units * units).sum(axis=0)) / (n * (n - 1))


def zscores(scores: np.ndarray) -> np.ndarray:
    """z-score each neuron's scores across languages: ``(s - mean_lang s) / std_lang s``.

    The standard deviation is the population one (``ddof=0``, as ``scipy.stats.zscore``); a
    neuron whose scores are equal in every language gets ``z = 0``. With K languages no z can
    exceed ``sqrt(K - 1)`` (:func:`max_zscore`): ``z > 2`` needs at least 6 languages. Source:
    ``zscore_outliers``, ``LinguaFranca/run.py:354-381`` (``np.std``, population).

    Args:
        scores: ``[K, d_ff]`` (languages × neurons).

    Returns:
        ``[K, d_ff]`` float64.

    Raises:
        HubError: ``scores`` is not 2-D.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise HubError(f"scores must be [languages, neurons], got shape {scores.shape}")
    mean = scores.mean(axis=0, keepdims=True)
    std = scores.std(axis=0, keepdims=True)
    return np.divide(scores - mean, std, out=np.zeros_like(scores), where=std > 0)


def key_neurons(
    per_language: Sequence[np.ndarray], threshold: float = 2.0, norms: Sequence[np.ndarray] | None = None, eps: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Key linguistic neurons of one layer (Zeng et al. 2025; ``LinguaFranca/run.py:300-381``).

    Args:
        per_language: K arrays ``[n_k, d_ff]``, the activations of each language's sentences.
        threshold: a neuron is key for language k when its z-score there exceeds this (paper: 2).
        norms: K arrays ``[n_k]``, each sentence's norm to divide by (released: the L2 norm of
            the all-layer concatenated vector); ``None``: each row's own norm (per layer).
        eps: added after the division (released: ``1e-5``).

    Returns:
        ``(scores [K, d_ff], z [K, d_ff], key [K, d_ff] bool)``, with :func:`group_scores` on
        :func:`scaled_units` per language and :func:`zscores` across languages.

    Raises:
        HubError: fewer than 2 languages, arrays of different widths, a language with < 2 rows.
    """
    if len(per_language) < 2:
        raise HubError(f"key neurons compare languages: need at least 2, got {len(per_language)}")
    widths = {np.asarray(v).shape[-1] for v in per_language}
    if len(widths) != 1:
        raise HubError(f"languages have activations of different widths: {sorted(widths)}")
    if norms is None and eps == 0.0:
        scores = np.stack([coactivation_scores(v) for v in per_language])
    else:
        rows = []
        for k, v in enumerate(per_language):
            units = scaled_units(v, None if norms is None else norms[k], eps)
            rows.append(group_scores(units, np.zeros(units.shape[0], dtype=np.int64), 1)[0])
        scores = np.stack(rows)
    z = zscores(scores)
    return scores, z, z > threshold


@dataclass(frozen=True)
class Lape:
    """LAPE selection (Tang et al. 2024) over all layers' neurons, flattened to N.

    Attributes:
        entropy: ``[N]`` entropy (nats) of each neuron's activation probabilities normalised over
            languages; ``inf`` for neurons filtered out (no language above ``min_prob``).
        selected: ``[N]`` bool, the ``top_rate`` share of neurons with the lowest entropy.
        specific: ``[K, N]`` bool, selected neurons whose probability in language k exceeds
            ``min_prob`` (the neuron is specific to those languages).
        min_prob: the probability threshold used (a quantile of all probabilities).
    """

    entropy: np.ndarray
    selected: np.ndarray
    specific: np.ndarray
    min_prob: float


def lape(probs: np.ndarray, top_rate: float = 0.01, quantile: float = 0.95) -> Lape:
    """Language activation probability entropy and the selection of language-specific neurons.

    Tang et al. (ACL 2024): ``p[k, j]`` is the share of language k's tokens on which
    neuron j is active (activation > 0). Normalised over languages, ``q[k, j] = p[k, j] /
    sum_k p[k, j]``, ``LAPE_j = -sum_k q[k, j] log q[k, j]`` (``0 log 0 = 0``). As in
    their ``identify.py`` (defaults top_rate 0.01, filter_rate = activation_bar_ratio = 0.95):
    ``min_prob`` is the ``quantile`` order statistic of all ``K·N`` probabilities (the
    ``round(K·N·quantile)``-th smallest); neurons with no probability above it are dropped; the
    ``round(N·top_rate)`` neurons of lowest entropy are selected (fewer when too few are left);
    a selected neuron is specific to every language whose probability exceeds ``min_prob``.

    Args:
        probs: ``[K, N]`` activation probabilities in [0, 1] (languages × neurons of all layers).
        top_rate: share of all N neurons to select, in (0, 1].
        quantile: order statistic of the probabilities used as the minimum, in (0, 1].

    Raises:
        HubError: not 2-D, fewer than 2 languages, probabilities outside [0, 1], or rates out of
            range.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 2:
        raise HubError(f"LAPE needs probabilities [languages >= 2, neurons], got shape {p.shape}")
    if np.isnan(p).any() or p.min() < 0 or p.max() > 1:
        raise HubError("activation probabilities must lie in [0, 1]")
    if not 0 < top_rate <= 1:
        raise HubError(f"--lape-top must be in (0, 1], got {top_rate}")
    if not 0 < quantile <= 1:
        raise HubError(f"--lape-quantile must be in (0, 1], got {quantile}")
    total = p.sum(axis=0, keepdims=True)
    q = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    logq = np.log(q, out=np.zeros_like(q), where=q > 0)
    entropy = -(q * logq).sum(axis=0)
    flat = p.reshape(-1)
    k = min(max(int(round(flat.size * quantile)), 1), flat.size)
    min_prob = float(np.partition(flat, k - 1)[k - 1])
    entropy = np.where((p > min_prob).any(axis=0), entropy, np.inf)
    count = int(round(p.shape[1] * top_rate))
    order = np.argsort(entropy, kind="stable")[:count]
    order = order[np.isfinite(entropy[order])]
    selected = np.zeros(p.shape[1], dtype=bool)
    selected[order] = True
    specific = selected[None, :] & (p > min_prob)
    return Lape(entropy=entropy, selected=selected, specific=specific, min_prob=min_prob)


# --------------------------------------------------------------------------- protocol versions (paper-protocols.md §B)

#: SADS definitions (``--sads``); see :func:`pair_contrasts` and :func:`sads_released`.
SADS_VARIANTS = ("intended", "hub", "released")


def parallel_layout(languages: Sequence[str], sentences: Sequence[int], order: Sequence[str] | None = None) -> np.ndarray:
    """Row index of every (language, sentence) of a parallel set: ``[K, S]`` int.

    Args:
        languages / sentences: ``[N]`` labels of the rows, N = K·S.
        order: the K languages in the order wanted (default: first appearance); sentences are
            sorted by id.

    Raises:
        HubError: labels of different lengths, or not every language has every sentence exactly
            once (the sets are not parallel).
    """
    languages = np.asarray(languages).astype(str)
    sentences = np.asarray(sentences)
    if languages.shape != sentences.shape or languages.ndim != 1:
        raise HubError("need one language and one sentence label per row")
    langs = list(order) if order is not None else list(dict.fromkeys(languages.tolist()))
    sents = np.unique(sentences)
    k, s = len(langs), sents.size
    if k * s != languages.size:
        raise HubError(f"{languages.size} rows are not {k} languages × {s} sentences: the sets are not parallel")
    layout = np.full((k, s), -1, dtype=np.int64)
    lang_pos = {name: i for i, name in enumerate(langs)}
    sent_pos = np.searchsorted(sents, sentences)
    for row, (lang, sp) in enumerate(zip(languages.tolist(), sent_pos.tolist())):
        if lang not in lang_pos or layout[lang_pos[lang], sp] != -1:
            raise HubError(f"row {row} ({lang}, sentence {sentences[row]}) is unknown or repeated: the sets are not parallel")
        layout[lang_pos[lang], sp] = row
    return layout


@dataclass(frozen=True)
class SentencePairs:
    """Cosine sums of one layer by sentence pair, the sufficient statistic of LRDS/SADS.

    Attributes:
        same_lang: ``[S, S]``: ``sum_l cos(x[l, s], x[l, s'])`` (diagonal: self pairs, never used).
        cross_lang: ``[S, S]``: ``sum_{l != l'} cos(x[l, s], x[l', s'])`` (diagonal: translations).
        n_languages: K.
    """

    same_lang: np.ndarray
    cross_lang: np.ndarray
    n_languages: int


def sentence_pairs(cos: np.ndarray, layout: np.ndarray) -> SentencePairs:
    """Sum an ``[N, N]`` cosine matrix into :class:`SentencePairs`.

    Args:
        cos: ``[N, N]`` cosines of all rows (e.g. ``unit_rows(x) @ unit_rows(x).T``).
        layout: ``[K, S]`` row indices (:func:`parallel_layout`).
    """
    k, s = layout.shape
    blocks = np.asarray(cos, dtype=np.float64)[np.ix_(layout.reshape(-1), layout.reshape(-1))].reshape(k, s, k, s)
    same = np.einsum("asat->st", blocks)
    total = blocks.sum(axis=(0, 2))
    return SentencePairs(same, total - same, k)


def pair_contrasts(pairs: SentencePairs, weights: np.ndarray | None = None) -> dict[str, tuple[float, float]]:
    """LRDS and SADS (``intended``, ``hub``) as ``(same, different)`` mean cosines.

    Pair sets (Zeng et al. 2025, ``paper-protocols.md`` §B2; ordered pairs, self pairs never count):

    * ``LRDS``: same language & different sentence vs different language & different sentence
      (translations excluded, as in the released ``show_cos_sim``);
    * ``SADS`` intended: translations (same sentence, different language) vs different language &
      different sentence; same-language pairs count in neither term;
    * ``SADS-hub`` (hub's earlier definition): translations vs every pair of different sentences,
      same-language pairs included.

    ``weights`` ``[S]`` are sentence multiplicities of a bootstrap resample: a pair of distinct
    sentences ``s != s'`` counts ``w_s w_s'`` times, a translation pair of sentence s counts ``w_s``
    times (pairs between two copies of one sentence are not pairs of different sentences and are
    left out). ``None`` is every sentence once.

    Returns:
        ``{"LRDS": (same, different), "SADS": …, "SADS-hub": …}`` (cosine units).

    Raises:
        HubError: fewer than 2 languages or 2 distinct sentences with weight.
    """
    k = pairs.n_languages
    s = pairs.same_lang.shape[0]
    w = np.ones(s) if weights is None else np.asarray(weights, dtype=np.float64)
    off = np.outer(w, w)
    np.fill_diagonal(off, 0.0)
    n_off = off.sum()
    if k < 2 or n_off == 0:
        raise HubError("LRDS/SADS need at least 2 languages and 2 different sentences")
    same_lang = (off * pairs.same_lang).sum() / (k * n_off)
    cross = (off * pairs.cross_lang).sum() / (k * (k - 1) * n_off)
    translations = (w * np.diag(pairs.cross_lang)).sum() / (k * (k - 1) * w.sum())
    any_diff = (off * (pairs.same_lang + pairs.cross_lang)).sum() / (k * k * n_off)
    return {"LRDS": (same_lang, cross), "SADS": (translations, cross), "SADS-hub": (translations, any_diff)}


def bootstrap_contrasts(pairs: SentencePairs, draws: np.ndarray) -> dict[str, np.ndarray]:
    """Bootstrap replicates over sentences of the :func:`pair_contrasts` scores.

    Args:
        pairs: one layer's :class:`SentencePairs`.
        draws: ``[B, S]`` sentence multiplicities, one resample per row (:func:`bootstrap_draws`).

    Returns:
        measure -> ``[B]`` replicates of ``same - different`` (cosine units); NaN for a resample
        that drew one sentence only (no pair of different sentences; possible when S is tiny).
    """
    out: dict[str, list[float]] = {}
    for w in draws:
        if (np.asarray(w) > 0).sum() < 2:
            for name in ("LRDS", "SADS", "SADS-hub"):
                out.setdefault(name, []).append(float("nan"))
            continue
        for name, (same, diff) in pair_contrasts(pairs, w).items():
            out.setdefault(name, []).append(same - diff)
    return {name: np.asarray(v) for name, v in out.items()}


def bootstrap_draws(n_sentences: int, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, S]`` multiplicities of S sentences resampled with replacement
    (``numpy.random.default_rng(seed)``); the same draws serve every layer, so CIs of different
    layers come from the same resamples."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_sentences, size=(n_boot, n_sentences))
    return np.stack([np.bincount(p, minlength=n_sentences) for p in picks]).astype(np.float64) if n_boot else np.zeros((0, n_sentences))


def percentile_ci(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval ``(low, high)`` at ``level`` over the finite replicates;
    ``(nan, nan)`` without any."""
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    low, high = np.quantile(reps, [alpha, 1 - alpha])
    return float(low), float(high)


def released_order(n_languages: int, n_sentences: int) -> np.ndarray:
    """The row permutation of the released ``rearrange_by_meaning`` (``LinguaFranca/run.py:208-220``).

    Rows are language-major (row = l·S + s); the released loop uses stride ``S+1``::

        for i in range(S + 1):
            for j in range(i, K * S, S + 1): order.append(j)

    so rows group by ``(s - l) mod (S+1)``, not by sentence (``paper-protocols.md`` §B2 [BUG]).
    """
    n = n_languages * n_sentences
    order: list[int] = []
    for i in range(n_sentences + 1):
        order.extend(range(i, n, n_sentences + 1))
    return np.asarray(order, dtype=np.int64)


def block_contrast(cos: np.ndarray, block: int) -> tuple[float, float]:
    """The released ``similarity_by_block`` + ``compare_similarity_diagnal``
    (``LinguaFranca/run.py:164-206``): the mean of each ``block × block`` block of ``cos`` with the
    block's own diagonal masked; returns ``(mean of the diagonal blocks' means, mean of the
    off-diagonal blocks' means)``.

    Raises:
        HubError: N not a multiple of ``block``, or ``block < 2``.
    """
    cos = np.asarray(cos, dtype=np.float64)
    n = cos.shape[0]
    if block < 2 or n % block:
        raise HubError(f"{n} rows do not split into blocks of {block}")
    m = n // block
    blocks = cos.reshape(m, block, m, block).transpose(0, 2, 1, 3)  # [m, m, B, B]
    mask = ~np.eye(block, dtype=bool)
    means = blocks[:, :, mask].mean(axis=-1)  # [m, m]
    diag = np.diag(means).mean()
    offd = means[~np.eye(m, dtype=bool)].mean()
    return float(diag), float(offd)


def sads_released(cos: np.ndarray, layout: np.ndarray) -> tuple[float, float]:
    """SADS as the released code computes it (``LinguaFranca/run.py`` ``show_cos_sim`` after
    ``rearrange_by_meaning``): language-major rows, permuted by :func:`released_order`, blocks of
    K. Returns ``(diagonal mean, off-diagonal mean)``; the score is their difference. The blocks do
    not hold translations (0.36% of the "diagonal" pairs are translations at K=10, S=100), so this
    does not measure alignment: it is kept to reproduce released numbers. The released per-layer
    call always uses S=100 whatever ``--sample_num``; this uses the real S.

    Args:
        cos: ``[N, N]`` cosines; layout: ``[K, S]`` (:func:`parallel_layout`).
    """
    k, s = layout.shape
    rows = layout.reshape(-1)[released_order(k, s)]
    return block_contrast(np.asarray(cos)[np.ix_(rows, rows)], k)


def scaled_units(vectors: np.ndarray, norms: np.ndarray | None = None, eps: float = 0.0) -> np.ndarray:
    """``x / norm + eps`` row by row (float64), the key-neuron input of the released
    ``find_max_average_neurons`` (``LinguaFranca/run.py:300-327``: ``hs / ||hs|| + 10e-6``).

    Args:
        vectors: ``[n, d]`` one layer's activations.
        norms: ``[n]`` the norm to divide by: the L2 norm of each sentence's *all-layer*
            concatenated vector as released; ``None``: each row's own (per-layer) norm.
        eps: added after the division (released: ``1e-5``). A zero norm leaves ``eps``.

    Raises:
        HubError: ``norms`` of the wrong length.
    """
    x = np.asarray(vectors, dtype=np.float64)
    if norms is None:
        return unit_rows(x) + eps
    norms = np.asarray(norms, dtype=np.float64).reshape(-1)
    if norms.shape[0] != x.shape[0]:
        raise HubError(f"need one norm per row: {norms.shape[0]} norms for {x.shape[0]} rows")
    return np.divide(x, norms[:, None], out=np.zeros_like(x), where=norms[:, None] > 0) + eps


def group_scores(units: np.ndarray, labels: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group k and neuron: ``mean_{i<j in k} u_i[n] u_j[n]`` (the released running mean of
    elementwise products, ``LinguaFranca/run.py:300-327``; its final extra division by the pair
    count is a constant per language and leaves every z-score unchanged, so it is not applied).

    Args:
        units: ``[N, d]`` (:func:`scaled_units`); labels: ``[N]`` ints in ``0..n_groups-1``.

    Returns:
        ``[n_groups, d]`` float64.

    Raises:
        HubError: a group with fewer than 2 rows.
    """
    onehot = np.zeros((n_groups, units.shape[0]))
    onehot[labels, np.arange(units.shape[0])] = 1.0
    sizes = onehot.sum(axis=1)
    if (sizes < 2).any():
        raise HubError("every language needs at least 2 sentences for key-neuron scores")
    total = onehot @ units
    squares = onehot @ (units * units)
    return (total * total - squares) / (sizes * (sizes - 1))[:, None]


def max_zscore(n_languages: int) -> float:
    """Largest z-score a value can reach among K with the population std: ``sqrt(K - 1)``
    (one value apart, the K-1 others equal). A threshold ``>=`` this selects nothing."""
    return float(np.sqrt(max(n_languages - 1, 0)))


def key_neuron_null(units: np.ndarray, labels: np.ndarray, n_groups: int, threshold: float, permutations: np.ndarray) -> np.ndarray:
    """Key-neuron counts under a label-permutation null.

    For each permutation the language labels are shuffled across all rows (sentences of every
    language), the scores (:func:`group_scores`) and z-scores (:func:`zscores`) recomputed, and the
    neurons with ``z > threshold`` counted per language. Group sizes are kept.

    Args:
        units: ``[N, d]`` one layer (:func:`scaled_units`, computed once: normalisation is per row).
        labels: ``[N]`` language index of each row.
        permutations: ``[R, N]`` permutations of ``0..N-1`` (:func:`permutations`).

    Returns:
        ``[R, n_groups]`` counts.
    """
    labels = np.asarray(labels)
    out = np.zeros((len(permutations), n_groups), dtype=np.int64)
    for r, perm in enumerate(permutations):
        z = zscores(group_scores(units, labels[perm], n_groups))
        out[r] = (z > threshold).sum(axis=1)
    return out


def permutations(n: int, count: int, seed: int) -> np.ndarray:
    """``[count, n]`` random permutations from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) for _ in range(count)]) if count else np.zeros((0, n), dtype=np.int64)
