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
    (cosine 0 with everything, as :func:`hubclient.stats.cosine_matrix`).

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


def lrds(vectors: np.ndarray, languages: Sequence[str]) -> GroupContrast:
    """LRDS of one layer (Zeng et al. 2025): language-related similarity.

    ``LRDS = mean_{i != j, lang_i = lang_j} cos(x_i, x_j) - mean_{lang_i != lang_j} cos(x_i, x_j)``:
    sentences of the same language (different sentences, self-pairs excluded) against sentences
    of different languages (any sentence ids, translations included). High where activations
    cluster by language.

    Args:
        vectors: ``[N, d]``, one row per (language, sentence).
        languages: ``[N]`` language of each row.

    Raises:
        HubError: as :func:`group_contrast`.
    """
    return group_contrast(vectors, languages)


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
    exceed ``(K - 1) / sqrt(K)``: a threshold of 2 needs at least 6 languages.

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


def key_neurons(per_language: Sequence[np.ndarray], threshold: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Key linguistic neurons of one layer (Zeng et al. 2025).

    Args:
        per_language: K arrays ``[n_k, d_ff]``, the activations of each language's sentences.
        threshold: a neuron is key for language k when its z-score there exceeds this (paper: 2).

    Returns:
        ``(scores [K, d_ff], z [K, d_ff], key [K, d_ff] bool)``, with :func:`coactivation_scores`
        per language and :func:`zscores` across languages.

    Raises:
        HubError: fewer than 2 languages, or arrays of different widths.
    """
    if len(per_language) < 2:
        raise HubError(f"key neurons compare languages: need at least 2, got {len(per_language)}")
    widths = {np.asarray(v).shape[-1] for v in per_language}
    if len(widths) != 1:
        raise HubError(f"languages have activations of different widths: {sorted(widths)}")
    scores = np.stack([coactivation_scores(v) for v in per_language])
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
