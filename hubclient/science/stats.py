"""Similarity statistics on plain numpy arrays: cosine matrices, Eq. 1, bootstrap CIs.

Model-free and run-free, so every analysis that compares paired representations (languages,
code vs English, arithmetic in digits vs words, COGS sentences vs logical forms, neurons) uses
the same numbers:

* :func:`cosine_matrix` — ``S_ij = cos(a_i, b_j)`` for two ``[N, d]`` arrays;
* :func:`baseline_adjusted` — Eq. 1 of the semantic hub paper (Wu et al. 2024,
  arXiv 2411.04986): ``mean_i S_ii - mean_{i != j} S_ij``, matching pairs minus non-matching
  pairs, so the anisotropy of hidden states cancels;
* :func:`pair_scores` — the per-pair scores whose mean *is* Eq. 1, the unit a bootstrap over
  pairs resamples;
* :func:`bootstrap_ci` — a seeded percentile bootstrap of a mean;
* :func:`similarity` — all of it at once for one pair of ``[N, d]`` arrays
  (:class:`Similarity`);
* ``baseline="all"`` (:data:`BASELINES`) — the arithmetic similarity of the paper's code
  (``arithmetic/similarity.py:74-109``, ``paper-protocols.md`` §A4): the baseline is the mean
  over **all** N² pairs, diagonal included, instead of Eq. 1's off-diagonal mean;
* :func:`paired_scores` — the paired difference of the COGS experiment (``paper-protocols.md``
  §A9, ``semantics/similarity.py:116-122``): ``cos(a_i, b_i) - cos(a_i, alt_i)`` per item.

Everything is computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hubclient.errors import HubError

#: Bootstrap resamples used when none are given.
N_BOOTSTRAP = 1000
#: Baselines of the baseline-adjusted similarity: ``offdiag`` (Eq. 1, ``mean_{i != j} S_ij``;
#: ``lib/utils.py:147-154`` of the paper's code) and ``all`` (``mean_{i, j} S_ij``, diagonal
#: included: the paper's arithmetic script, ``arithmetic/similarity.py:100-109``).
BASELINES = ("offdiag", "all")


def check_baseline(baseline: str) -> str:
    """Return ``baseline`` if it is one of :data:`BASELINES`.

    Raises:
        HubError: anything else, naming the choices.
    """
    if baseline not in BASELINES:
        raise HubError(f"unknown --baseline {baseline!r}; choose offdiag (Eq. 1: non-matching pairs only) or all (every pair, diagonal included: the paper's arithmetic code)")
    return baseline


@dataclass(frozen=True)
class Similarity:
    """Eq. 1 for one pair of representation sets, with its confidence interval.

    Attributes:
        similarity: baseline-adjusted similarity, ``matching - non_matching`` (cosine units).
        matching: mean cosine of matching pairs, ``mean_i S_ii``.
        non_matching: mean cosine of non-matching pairs, ``mean_{i != j} S_ij``.
        ci_low / ci_high: bounds of the percentile bootstrap interval of ``similarity``.
        n: number of pairs N.
    """

    similarity: float
    matching: float
    non_matching: float
    ci_low: float
    ci_high: float
    n: int


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise HubError(f"{name} must be a [N, d] array, got shape {x.shape}")
    return x


def center(x: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Subtract a mean vector from every row: ``x - mean`` (default: the mean of ``x``'s rows).

    Args:
        x: ``[N, d]`` vectors.
        mean: ``[d]``; pass the mean over *all* inputs of a layer (every language) to center two
            sets the same way.

    Returns:
        ``[N, d]`` float64.
    """
    x = _as_2d(x, "x")
    mean = x.mean(axis=0) if mean is None else np.asarray(mean, dtype=np.float64)
    return x - mean


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b``.

    Args:
        a: ``[N, d]``; b: ``[M, d]``.

    Returns:
        ``S`` of shape ``[N, M]``, ``S_ij = a_i·b_j / (|a_i| |b_j|)`` (float64); a zero vector
        gives cosine 0.

    Raises:
        HubError: not 2-D, or different widths ``d``.
    """
    a, b = _as_2d(a, "a"), _as_2d(b, "b")
    if a.shape[1] != b.shape[1]:
        raise HubError(f"cannot compare vectors of width {a.shape[1]} and {b.shape[1]}")
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    a = np.divide(a, na, out=np.zeros_like(a), where=na > 0)
    b = np.divide(b, nb, out=np.zeros_like(b), where=nb > 0)
    return a @ b.T


def _check_square(sim: np.ndarray) -> np.ndarray:
    sim = np.asarray(sim, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise HubError(f"a similarity matrix of paired items must be square [N, N], got shape {sim.shape}")
    if sim.shape[0] < 2:
        raise HubError("need at least 2 pairs: Eq. 1's baseline compares non-matching pairs")
    return sim


def baseline_adjusted(sim: np.ndarray, baseline: str = "offdiag") -> tuple[float, float, float]:
    """Eq. 1 (Wu et al. 2024): matching minus non-matching mean cosine.

    Args:
        sim: ``[N, N]`` with ``sim[i, j] = cos(x_i, y_j)`` and ``(x_i, y_i)`` the matching pairs.
        baseline: ``offdiag`` (Eq. 1) or ``all`` (the paper's arithmetic code,
            ``arithmetic/similarity.py:100-109``: the mean over all N² pairs, diagonal
            included, is subtracted).

    Returns:
        ``(similarity, matching, non_matching)`` where ``matching = mean_i S_ii``,
        ``non_matching = mean_{i != j} S_ij`` and ``similarity = matching - non_matching``
        (``offdiag``) or ``matching - mean_{i, j} S_ij`` (``all``; ``non_matching`` is still
        the off-diagonal mean).

    Raises:
        HubError: not square, N < 2, or an unknown ``baseline``.
    """
    sim = _check_square(sim)
    check_baseline(baseline)
    n = sim.shape[0]
    matching = float(np.trace(sim) / n)
    non_matching = float((sim.sum() - np.trace(sim)) / (n * (n - 1)))
    base = float(sim.sum() / (n * n)) if baseline == "all" else non_matching
    return matching - base, matching, non_matching


def baseline_mean(sim: np.ndarray, baseline: str = "offdiag") -> float:
    """The mean cosine :func:`baseline_adjusted` subtracts: ``mean_{i != j} S_ij`` (``offdiag``)
    or ``mean_{i, j} S_ij`` (``all``).

    Raises:
        HubError: not square, N < 2, or an unknown ``baseline``.
    """
    value, matching, _ = baseline_adjusted(sim, baseline)
    return matching - value


def pair_scores(sim: np.ndarray, baseline: str = "offdiag") -> np.ndarray:
    """Per-pair baseline-adjusted scores whose mean is exactly Eq. 1.

    ``score_i = S_ii - (row_i + col_i) / 2`` with ``row_i = mean_{j != i} S_ij`` and
    ``col_i = mean_{j != i} S_ji``: pair ``i``'s cosine minus its own non-matching baseline
    (both directions). Since every off-diagonal entry is counted once in a row mean and once in
    a column mean, ``mean_i score_i = mean_i S_ii - mean_{i != j} S_ij``. A bootstrap over pairs
    resamples these scores.

    With ``baseline="all"`` the row and column means include the diagonal
    (``row_i = mean_j S_ij``), so ``mean_i score_i = mean_i S_ii - mean_{i, j} S_ij``, the
    quantity of the paper's arithmetic code (``paper-protocols.md`` §A4).

    Args:
        sim: ``[N, N]`` cosine matrix of paired items (N >= 2).
        baseline: ``offdiag`` or ``all`` (see :func:`baseline_adjusted`).

    Returns:
        ``[N]`` float64.

    Raises:
        HubError: not square, N < 2, or an unknown ``baseline``.
    """
    sim = _check_square(sim)
    check_baseline(baseline)
    n = sim.shape[0]
    diag = np.diag(sim)
    if baseline == "all":
        row, col = sim.mean(axis=1), sim.mean(axis=0)
    else:
        row = (sim.sum(axis=1) - diag) / (n - 1)
        col = (sim.sum(axis=0) - diag) / (n - 1)
    return diag - (row + col) / 2


def paired_scores(a: np.ndarray, b: np.ndarray, alt: np.ndarray, mean: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The paired baseline of the paper's COGS experiment, per item.

    ``score_i = cos(a_i, b_i) - cos(a_i, alt_i)``: item ``i``'s matching cosine minus its cosine
    with its own altered counterpart (e.g. the logical form with the two names swapped).
    Source: ``paper-protocols.md`` §A9, ``semantics/similarity.py:116-122`` of the paper's code
    (``mean_i [cos(h(sent_i), h(LF_i)) - cos(h(sent_i), h(swappedLF_i))]``).

    Args:
        a, b, alt: ``[N, d]`` aligned representations (row ``i`` of each is item ``i``).
        mean: optional ``[d]`` vector subtracted from all three first (centering).

    Returns:
        ``(scores, matching, altered)``, each ``[N]`` float64: ``scores = matching - altered``.

    Raises:
        HubError: shapes that differ or are not ``[N, d]``, or N < 1.
    """
    a, b, alt = _as_2d(a, "a"), _as_2d(b, "b"), _as_2d(alt, "alt")
    if not a.shape == b.shape == alt.shape:
        raise HubError(f"paired sets must have the same shape, got {a.shape}, {b.shape} and {alt.shape}")
    if a.shape[0] < 1:
        raise HubError("need at least 1 item for the paired similarity")
    if mean is not None:
        a, b, alt = center(a, mean), center(b, mean), center(alt, mean)
    matching = _row_cosines(a, b)
    altered = _row_cosines(a, alt)
    return matching - altered, matching, altered


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``cos(a_i, b_i)`` per row (0 for a zero vector), float64 ``[N]``."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    denom = na * nb
    dots = np.einsum("nd,nd->n", a, b)
    return np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)


def bootstrap_ci(values: np.ndarray, n_boot: int = N_BOOTSTRAP, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values``.

    Draws ``n_boot`` resamples of the N values with replacement (``numpy.random.default_rng(seed)``,
    so the same seed gives the same interval) and returns the ``(1-level)/2`` and
    ``(1+level)/2`` quantiles of their means.

    Args:
        values: ``[N]`` per-item scores (e.g. :func:`pair_scores`).
        n_boot: number of resamples (>= 1).
        level: coverage, in (0, 1).
        seed: random seed.

    Returns:
        ``(low, high)``.

    Raises:
        HubError: empty ``values``, ``n_boot < 1`` or ``level`` outside (0, 1).
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise HubError("cannot bootstrap an empty set of values")
    if n_boot < 1:
        raise HubError(f"--bootstrap must be at least 1, got {n_boot}")
    if not 0 < level < 1:
        raise HubError(f"confidence level must be between 0 and 1, got {level}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_boot, values.size))
    means = values[idx].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def similarity(a: np.ndarray, b: np.ndarray, mean: np.ndarray | None = None, n_boot: int = N_BOOTSTRAP, level: float = 0.95, seed: int = 0, baseline: str = "offdiag") -> Similarity:
    """Eq. 1 with a bootstrap CI for paired sets ``a`` and ``b`` (row ``i`` of each is pair ``i``).

    Args:
        a, b: ``[N, d]`` representations (e.g. last-token hidden states of one layer in two
            languages).
        mean: optional ``[d]`` vector subtracted from both before the cosine (centering; pass
            the mean over all inputs of the layer). ``None``: raw cosines, as the paper.
        n_boot, level, seed: see :func:`bootstrap_ci` (the bootstrap resamples pairs).
        baseline: ``offdiag`` (Eq. 1) or ``all`` (see :func:`baseline_adjusted`).

    Returns:
        a :class:`Similarity`.

    Raises:
        HubError: shapes that differ or are not ``[N, d]``, N < 2, an unknown ``baseline``.
    """
    a, b = _as_2d(a, "a"), _as_2d(b, "b")
    if a.shape != b.shape:
        raise HubError(f"paired sets must have the same shape, got {a.shape} and {b.shape}")
    if mean is not None:
        a, b = center(a, mean), center(b, mean)
    sim = cosine_matrix(a, b)
    value, matching, non_matching = baseline_adjusted(sim, baseline)
    low, high = bootstrap_ci(pair_scores(sim, baseline), n_boot=n_boot, level=level, seed=seed)
    return Similarity(value, matching, non_matching, low, high, a.shape[0])
