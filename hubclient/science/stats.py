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
  (:class:`Similarity`).

Everything is computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hubclient.errors import HubError

#: Bootstrap resamples used when none are given.
N_BOOTSTRAP = 1000


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


def baseline_adjusted(sim: np.ndarray) -> tuple[float, float, float]:
    """Eq. 1 (Wu et al. 2024): matching minus non-matching mean cosine.

    Args:
        sim: ``[N, N]`` with ``sim[i, j] = cos(x_i, y_j)`` and ``(x_i, y_i)`` the matching pairs.

    Returns:
        ``(similarity, matching, non_matching)`` where ``matching = mean_i S_ii``,
        ``non_matching = mean_{i != j} S_ij`` and ``similarity = matching - non_matching``.

    Raises:
        HubError: not square, or N < 2.
    """
    sim = _check_square(sim)
    n = sim.shape[0]
    matching = float(np.trace(sim) / n)
    non_matching = float((sim.sum() - np.trace(sim)) / (n * (n - 1)))
    return matching - non_matching, matching, non_matching


def pair_scores(sim: np.ndarray) -> np.ndarray:
    """Per-pair baseline-adjusted scores whose mean is exactly Eq. 1.

    ``score_i = S_ii - (row_i + col_i) / 2`` with ``row_i = mean_{j != i} S_ij`` and
    ``col_i = mean_{j != i} S_ji``: pair ``i``'s cosine minus its own non-matching baseline
    (both directions). Since every off-diagonal entry is counted once in a row mean and once in
    a column mean, ``mean_i score_i = mean_i S_ii - mean_{i != j} S_ij``. A bootstrap over pairs
    resamples these scores.

    Args:
        sim: ``[N, N]`` cosine matrix of paired items (N >= 2).

    Returns:
        ``[N]`` float64.
    """
    sim = _check_square(sim)
    n = sim.shape[0]
    diag = np.diag(sim)
    row = (sim.sum(axis=1) - diag) / (n - 1)
    col = (sim.sum(axis=0) - diag) / (n - 1)
    return diag - (row + col) / 2


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


def similarity(a: np.ndarray, b: np.ndarray, mean: np.ndarray | None = None, n_boot: int = N_BOOTSTRAP, level: float = 0.95, seed: int = 0) -> Similarity:
    """Eq. 1 with a bootstrap CI for paired sets ``a`` and ``b`` (row ``i`` of each is pair ``i``).

    Args:
        a, b: ``[N, d]`` representations (e.g. last-token hidden states of one layer in two
            languages).
        mean: optional ``[d]`` vector subtracted from both before the cosine (centering; pass
            the mean over all inputs of the layer). ``None``: raw cosines, as the paper.
        n_boot, level, seed: see :func:`bootstrap_ci` (the bootstrap resamples pairs).

    Returns:
        a :class:`Similarity`.

    Raises:
        HubError: shapes that differ or are not ``[N, d]``, N < 2.
    """
    a, b = _as_2d(a, "a"), _as_2d(b, "b")
    if a.shape != b.shape:
        raise HubError(f"paired sets must have the same shape, got {a.shape} and {b.shape}")
    if mean is not None:
        a, b = center(a, mean), center(b, mean)
    sim = cosine_matrix(a, b)
    value, matching, non_matching = baseline_adjusted(sim)
    low, high = bootstrap_ci(pair_scores(sim), n_boot=n_boot, level=level, seed=seed)
    return Similarity(value, matching, non_matching, low, high, a.shape[0])
