"""Drift statistics: has what the system sees moved away from what it was trained and tuned on?

Three kinds of samples are compared with a reference (the training window, or last week):

- numeric features and model scores: the population stability index (PSI) over the reference's quantile bins, and the
  two-sample Kolmogorov-Smirnov test (statistic and asymptotic p-value);
- categorical features (genre shares, strategy mix): the Jensen-Shannon divergence (base 2) and the chi-square test of
  homogeneity of the two count vectors;
- embeddings (user-tower outputs): the cosine distance between mean embeddings and the maximum mean discrepancy (MMD)
  with an RBF kernel, on capped subsamples, with a permutation p-value.

For a stream of rewards there are two sequential change detectors, Page-Hinkley and ADWIN, whose state is a small
JSON-able dict so that it survives between scheduled runs. `feature_drift` picks the test per feature and returns a
`DriftReport`; `DriftThresholds` holds the defaults and says why they are what they are.

Pure numpy (no scipy): the Kolmogorov and chi-square tail probabilities are computed here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeGuard

import numpy as np

FeatureKind = Literal["numeric", "categorical", "embedding"]
Direction = Literal["both", "down", "up"]
_DIRECTIONS: tuple[Direction, ...] = ("both", "down", "up")
_KINDS = ("numeric", "categorical", "embedding")


# -- input checks ---------------------------------------------------------------------------------------------------


def _sample(name: str, values: object, ndim: int = 1, min_rows: int = 1, keep_float: bool = False) -> np.ndarray:
    """`values` as a finite float array of `ndim` dimensions with at least `min_rows` rows; float64 unless
    `keep_float` lets a float32 array through uncopied (large embedding matrices)."""
    array = np.asarray(values)
    if not (keep_float and array.dtype.kind == "f"):
        array = np.asarray(values, dtype=np.float64)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {array.shape}")
    if array.shape[0] < min_rows or array.size == 0:
        raise ValueError(f"{name} is empty or too small: need at least {min_rows} rows, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = np.flatnonzero(~np.isfinite(array.ravel()))
        raise ValueError(f"{name} must be finite: {bad.size} NaN or infinite values, the first at flat index {bad[0]}")
    return array


def _positive_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _finite_float(name: str, value: float) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def _direction(value: str) -> Direction:
    for direction in _DIRECTIONS:
        if value == direction:
            return direction
    raise ValueError(f"direction must be one of {', '.join(_DIRECTIONS)}, got {value!r}")


# -- numeric features: PSI and Kolmogorov-Smirnov ------------------------------------------------------------------


def quantile_bins(reference: object, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The cut points and atom flags that `psi` bins with: the reference's interior quantiles at 1/n_bins, ...,
    (n_bins-1)/n_bins, ties collapsed. A cut point that the reference takes exactly and more than once (an atom, as
    0 in a mostly-zero feature, or every value of a constant feature) gets a bin of its own, so that a constant
    reference still has a bin below it, one at it and one above it."""
    return _quantile_bins(np.sort(_sample("reference", reference)), n_bins)


def _quantile_bins(ref: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    n_bins = _positive_int("n_bins", n_bins, 2)
    cuts = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, n_bins + 1)[1:-1]))
    at_cut = np.searchsorted(ref, cuts, side="right") - np.searchsorted(ref, cuts, side="left")
    return cuts, at_cut > 1


def _bin_counts(values: np.ndarray, cuts: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    # Bin 2j: between cut j-1 and cut j (open ends at +-inf); bin 2j-1: exactly cut j-1 when that cut is an atom.
    above = np.searchsorted(cuts, values, side="right")  # number of cuts <= value
    ids = 2 * above
    previous = np.maximum(above - 1, 0)
    on_atom = (above > 0) & (values == cuts[previous]) & atoms[previous]
    ids[on_atom] -= 1
    return np.bincount(ids, minlength=2 * cuts.size + 1).astype(np.float64)


def psi(reference: object, live: object, n_bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index sum_b (q_b - p_b) ln(q_b / p_b) of the live shares q over the reference shares p,
    in bins cut at the reference's quantiles (`quantile_bins`); the outer bins reach to +-inf, so live values outside
    the reference's range land in them. Empty bins count as `eps` (no renormalisation; a bin empty on both sides adds
    nothing).

    Usual reading: below 0.1 no shift worth a look, 0.1-0.25 a moderate shift, above 0.25 a major one. With B bins
    and samples of n and m rows, PSI of two samples of one distribution is about (B - 1)(1/n + 1/m) on average, so a
    live sample of a few hundred rows or more is needed before 0.1-0.25 means anything."""
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must lie in (0, 1), got {eps!r}")
    ref = np.sort(_sample("reference", reference))
    now = _sample("live", live)
    cuts, atoms = _quantile_bins(ref, n_bins)
    p = np.maximum(_bin_counts(ref, cuts, atoms) / ref.size, eps)
    q = np.maximum(_bin_counts(now, cuts, atoms) / now.size, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def kolmogorov_sf(z: object) -> np.ndarray | float:
    """P(K > z) for the Kolmogorov distribution (the limit of sqrt(n) D_n): 2 sum_k (-1)^(k-1) exp(-2 k^2 z^2) for
    z >= 1, and 1 - sqrt(2 pi)/z sum_k exp(-(2k-1)^2 pi^2 / (8 z^2)) below, where that series converges faster."""
    values = np.asarray(z, dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError("kolmogorov_sf needs numbers, got NaN")
    flat = np.atleast_1d(values).ravel()
    out = np.ones_like(flat)
    k = np.arange(1, 21, dtype=np.float64)
    large = flat >= 1.0
    if large.any():
        zl = flat[large][:, None]
        out[large] = 2.0 * np.sum((-1.0) ** (k - 1) * np.exp(-2.0 * k**2 * zl**2), axis=1)
    small = (flat > 0.04) & ~large  # below 0.04 the CDF is under 1e-300
    if small.any():
        zs = flat[small][:, None]
        cdf = math.sqrt(2.0 * math.pi) / zs[:, 0] * np.sum(np.exp(-((2 * k - 1) ** 2) * math.pi**2 / (8 * zs**2)), axis=1)
        out[small] = 1.0 - cdf
    sf = np.clip(out, 0.0, 1.0).reshape(np.shape(values))
    return float(sf) if sf.ndim == 0 else sf


def ks_sf(d: float, n: int) -> float:
    """P(D_n > d) for the two-sided one-sample Kolmogorov-Smirnov statistic of n points: the Kolmogorov distribution
    with the Pelz-Good (1976) corrections up to n^(-3/2), P(D_n <= d) ~ K0(z) + K1(z)/sqrt(n) + K2(z)/n +
    K3(z)/n^1.5 with z = sqrt(n) d, each K in its Jacobi-theta form. Matches the exact distribution to better than
    1e-5 absolute for n >= 100 (scipy's `kstwo` uses this form for large n). Computed as 1 - CDF, so probabilities
    below about 1e-12 are rounding noise (a few 1e-16, or 0)."""
    n = _positive_int("n", n)
    d = _finite_float("d", d)
    if d <= 0.0:
        return 1.0
    if d >= 1.0:
        return 0.0
    if n * d * d >= 370.0:  # below 1e-160
        return 0.0
    z = math.sqrt(n) * d
    z2 = z * z
    if -(math.pi**2) / (8 * z2) < -700.0:  # z below ~0.042: the CDF is 0
        return 1.0
    pi2, pi4, pi6 = math.pi**2, math.pi**4, math.pi**6
    terms = math.ceil(16 * z / math.pi) + 1
    m = 2.0 * np.arange(1, terms + 1) - 1.0
    m2 = m * m
    odd = np.exp(-m2 * pi2 / (8 * z2))
    k2 = np.arange(1, terms + 1, dtype=np.float64) ** 2
    whole = np.exp(-k2 * pi2 / (2 * z2))
    root = math.sqrt(math.pi / 2)
    k0 = math.sqrt(2 * math.pi) / z * float(np.sum(odd))
    k1 = root / (3 * z**4) * float(np.sum((pi2 * m2 / 4 - z2) * odd))
    k2_ = (
        root
        / (36 * z**7)
        * float(np.sum((6 * z**6 + 2 * z**4 + pi2 * (2 * z**4 - 5 * z2) * m2 / 4 + pi4 * (1 - 2 * z2) * m2**2 / 16) * odd))
    )
    k2_ -= root * pi2 / (18 * z**3) * float(np.sum(k2 * whole))
    k3 = (
        root
        / (3240 * z**10)
        * float(
            np.sum(
                (
                    pi6 * (5 - 30 * z2) * m2**3 / 64
                    + pi4 * (212 * z**4 - 60 * z2) * m2**2 / 16
                    + pi2 * (135 * z**4 - 96 * z**6) * m2 / 4
                    - 30 * z**6
                    - 90 * z**8
                )
                * odd
            )
        )
    )
    k3 += root * pi2 / (108 * z**6) * float(np.sum((3 * z2 - pi2 * k2) * k2 * whole))
    cdf: float = k0 + k1 / math.sqrt(n) + k2_ / n + k3 / n**1.5
    return min(max(1.0 - cdf, 0.0), 1.0)


@dataclass(frozen=True)
class KsTest:
    """Two-sample Kolmogorov-Smirnov: the largest gap between the two empirical CDFs, and its asymptotic p-value."""

    statistic: float
    pvalue: float
    effective_n: int  # round(n m / (n + m)): the n of the one-sample distribution the p-value is read from


def ks_two_sample(reference: object, live: object) -> KsTest:
    """Two-sided two-sample KS test, as scipy.stats.ks_2samp(method="asymp"): D = sup |F_ref - F_live| (ties handled
    by evaluating both CDFs at every observed value), p = P(D_n > D) with n = round(n_ref n_live / (n_ref + n_live))
    (`ks_sf`). With 100k rows a side, D = 0.01 is already 'significant': judge the statistic as well (see
    `DriftThresholds`)."""
    ref = np.sort(_sample("reference", reference))
    now = np.sort(_sample("live", live))
    values = np.concatenate([ref, now])
    gap = np.searchsorted(ref, values, side="right") / ref.size - np.searchsorted(now, values, side="right") / now.size
    statistic = float(np.max(np.abs(gap)))
    effective_n = max(round(ref.size * now.size / (ref.size + now.size)), 1)
    return KsTest(statistic, ks_sf(statistic, effective_n), effective_n)


# -- categorical features: Jensen-Shannon and chi-square -----------------------------------------------------------


def _counts(name: str, values: object) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of counts, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite counts, got {array.tolist()!r}")
    if (array < 0).any():
        first = int(np.flatnonzero(array < 0)[0])
        raise ValueError(f"{name} must be non-negative counts: index {first} is {float(array[first])!r}")
    if array.sum() <= 0:
        raise ValueError(f"{name} has no observations: its counts sum to 0")
    return array


def align_counts(
    reference: Mapping[Any, float] | object, live: Mapping[Any, float] | object
) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """(categories, reference counts, live counts) over the same categories. Two mappings are aligned on the union of
    their keys (a category missing on one side counts 0 there; the categories in the reference's order, then the
    live-only ones); two arrays must already be aligned and have the same length."""
    if isinstance(reference, Mapping) and isinstance(live, Mapping):
        categories = list(reference) + [key for key in live if key not in reference]
        ref = _counts("reference counts", [reference.get(key, 0) for key in categories])
        now = _counts("live counts", [live.get(key, 0) for key in categories])
        return categories, ref, now
    if isinstance(reference, Mapping) or isinstance(live, Mapping):
        raise ValueError("reference and live counts must both be mappings (category -> count) or both aligned arrays")
    ref = _counts("reference counts", reference)
    now = _counts("live counts", live)
    if ref.shape != now.shape:
        raise ValueError(f"aligned count arrays must have the same length: reference {ref.shape}, live {now.shape}")
    return list(range(ref.size)), ref, now


def category_counts(labels: Iterable[Any]) -> dict[Any, int]:
    """Counts of each label (strings or ids) in a sample of raw labels, ready for `align_counts`."""
    values, counts = np.unique(np.asarray(list(labels) if not isinstance(labels, np.ndarray) else labels), return_counts=True)
    return {value.item() if hasattr(value, "item") else value: int(count) for value, count in zip(values, counts)}


def js_divergence(reference: Mapping[Any, float] | object, live: Mapping[Any, float] | object) -> float:
    """Jensen-Shannon divergence, base 2, between the shares of two count vectors: (KL(p|m) + KL(q|m)) / 2 with
    m = (p + q) / 2. Symmetric, 0 for equal shares, 1 for disjoint supports. Its square root (`js_distance`) is a
    metric and is what scipy.spatial.distance.jensenshannon and most monitoring tools report."""
    _, ref, now = align_counts(reference, live)
    p, q = ref / ref.sum(), now / now.sum()
    m = (p + q) / 2.0

    def kl(a: np.ndarray) -> float:
        used = a > 0
        return float(np.sum(a[used] * np.log2(a[used] / m[used])))

    return float(min(max((kl(p) + kl(q)) / 2.0, 0.0), 1.0))


def js_distance(reference: Mapping[Any, float] | object, live: Mapping[Any, float] | object) -> float:
    """sqrt(js_divergence): the Jensen-Shannon distance, in [0, 1]."""
    return math.sqrt(js_divergence(reference, live))


_GAMMA_EPS = 1e-15
_GAMMA_TINY = 1e-300


def gamma_q(a: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(a, x) = Gamma(a, x) / Gamma(a), as Numerical Recipes' gammq: the series
    for P(a, x) when x < a + 1, Lentz's continued fraction for Q(a, x) otherwise."""
    a, x = _finite_float("a", a), _finite_float("x", x)
    if a <= 0.0:
        raise ValueError(f"gamma_q needs a > 0, got a={a!r}")
    if x < 0.0:
        raise ValueError(f"gamma_q needs x >= 0, got x={x!r}")
    if x == 0.0:
        return 1.0
    log_prefactor = a * math.log(x) - x - math.lgamma(a)
    max_iter = 1000 + int(20 * math.sqrt(max(a, x)))
    if x < a + 1.0:
        term = total = 1.0 / a
        ap = a
        for _ in range(max_iter):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * _GAMMA_EPS:
                return min(max(1.0 - total * math.exp(log_prefactor), 0.0), 1.0)
        raise ArithmeticError(f"gamma_q series did not converge for a={a}, x={x}")
    b = x + 1.0 - a
    c = 1.0 / _GAMMA_TINY
    d = 1.0 / b
    h = d
    for i in range(1, max_iter):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _GAMMA_TINY if abs(d) < _GAMMA_TINY else d
        c = b + an / c
        c = _GAMMA_TINY if abs(c) < _GAMMA_TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _GAMMA_EPS:
            return min(max(math.exp(log_prefactor) * h, 0.0), 1.0)
    raise ArithmeticError(f"gamma_q continued fraction did not converge for a={a}, x={x}")


def chi2_sf(statistic: float, dof: int) -> float:
    """P(X > statistic) for X chi-square with `dof` degrees of freedom: Q(dof/2, statistic/2)."""
    dof = _positive_int("dof", dof)
    statistic = _finite_float("statistic", statistic)
    if statistic < 0.0:
        raise ValueError(f"a chi-square statistic is non-negative, got {statistic!r}")
    return gamma_q(dof / 2.0, statistic / 2.0)


@dataclass(frozen=True)
class ChiSquareTest:
    """Pearson's chi-square test of homogeneity of a 2 x K table (reference and live counts over K categories)."""

    statistic: float
    dof: int
    pvalue: float


def chi_square_test(reference: Mapping[Any, float] | object, live: Mapping[Any, float] | object) -> ChiSquareTest:
    """Do the two count vectors come from one categorical distribution? Pearson's statistic of the 2 x K table
    without continuity correction (scipy.stats.chi2_contingency(..., correction=False)), categories empty on both
    sides dropped, dof = K - 1. A category seen only live is fine here (the pooled shares are the expectation).
    Meant for counts: shares would make the p-value meaningless. Like KS, a large sample makes any shift
    significant, hence the effect-size condition in `DriftThresholds`."""
    _, ref, now = align_counts(reference, live)
    seen = (ref + now) > 0
    table = np.vstack([ref[seen], now[seen]])
    dof = table.shape[1] - 1
    if dof == 0:
        return ChiSquareTest(0.0, 0, 1.0)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return ChiSquareTest(statistic, dof, chi2_sf(statistic, dof))


# -- embeddings: mean direction and MMD ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingDrift:
    """How far the live embeddings are from the reference: the cosine distance between mean embeddings (1 - cos; 1.0
    when a mean is the zero vector), the unbiased MMD^2 with an RBF kernel of width `bandwidth` on subsamples of
    `n_reference_used` and `n_live_used` rows, and its permutation p-value."""

    mean_cosine_distance: float
    mmd2: float
    mmd_pvalue: float
    bandwidth: float
    n_reference_used: int
    n_live_used: int


def _subsample(rows: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    if rows.shape[0] <= cap:
        return rows
    return rows[np.sort(rng.choice(rows.shape[0], size=cap, replace=False))]


def embedding_drift(
    reference: object,
    live: object,
    max_samples: int = 500,
    n_permutations: int = 200,
    seed: int | np.random.Generator | None = 0,
) -> EmbeddingDrift:
    """Compare two samples of embeddings (rows, same width). The MMD (Gretton et al. 2012) needs no classifier: with
    k(x, y) = exp(-|x - y|^2 / (2 s^2)), s the median pairwise distance of the pooled subsample (the median
    heuristic), MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y), estimated without the diagonal. Each side is cut to
    at most `max_samples` random rows (seeded), so the cost is bounded at O((2 max_samples)^2 (d + n_permutations))
    whatever the sample sizes (~100 ms at the defaults on 2 cores, d = 64, 100k rows a side), and so is the test's
    power: a huge live sample cannot turn a negligible shift significant. The p-value is (1 + #permutations at least as large) /
    (1 + n_permutations). float32 input is not copied; only the means read every row."""
    ref, now = _embeddings("", reference, live)
    return _embedding_drift(ref, now, max_samples, n_permutations, seed)


def _embeddings(prefix: str, reference: object, live: object) -> tuple[np.ndarray, np.ndarray]:
    ref = _sample(f"{prefix}reference embeddings", reference, ndim=2, min_rows=2, keep_float=True)
    now = _sample(f"{prefix}live embeddings", live, ndim=2, min_rows=2, keep_float=True)
    if ref.shape[1] != now.shape[1]:
        raise ValueError(f"{prefix}embeddings must have the same width: reference {ref.shape}, live {now.shape}")
    return ref, now


def _embedding_drift(
    ref: np.ndarray, now: np.ndarray, max_samples: int, n_permutations: int, seed: int | np.random.Generator | None
) -> EmbeddingDrift:
    max_samples = _positive_int("max_samples", max_samples, 2)
    n_permutations = _positive_int("n_permutations", n_permutations, 0)
    rng = np.random.default_rng(seed)

    mean_ref, mean_now = ref.mean(axis=0, dtype=np.float64), now.mean(axis=0, dtype=np.float64)
    norms = float(np.linalg.norm(mean_ref) * np.linalg.norm(mean_now))
    cosine = 1.0 if norms <= 1e-300 else float(1.0 - np.clip(mean_ref @ mean_now / norms, -1.0, 1.0))

    x = _subsample(ref, max_samples, rng).astype(np.float64)
    y = _subsample(now, max_samples, rng).astype(np.float64)
    pooled = np.vstack([x, y])
    squared = np.sum(pooled**2, axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2.0 * pooled @ pooled.T, 0.0)
    upper = distances[np.triu_indices(pooled.shape[0], k=1)]
    median_squared = float(np.median(upper))  # the squared median distance
    if median_squared <= 0.0:  # mostly duplicate rows: the median of the distinct pairs
        positive = upper[upper > 0]
        median_squared = float(np.median(positive)) if positive.size else 1.0  # all rows equal: MMD is 0 anyway
    kernel = np.exp(-distances / (2.0 * median_squared))
    bandwidth = math.sqrt(median_squared)

    n, m = x.shape[0], y.shape[0]
    total = float(kernel.sum())
    diagonal = float(np.trace(kernel))

    def mmd2(in_x: np.ndarray) -> np.ndarray:
        # in_x: (N, P) 0/1 membership of the first group; the sums of each block follow from K @ in_x.
        k_in = kernel @ in_x
        sum_xx = np.sum(in_x * k_in, axis=0)
        sum_xy = np.sum((1.0 - in_x) * k_in, axis=0)
        sum_yy = total - sum_xx - 2.0 * sum_xy
        diag_x = in_x.T @ np.diag(kernel)
        diag_y = diagonal - diag_x
        mmd2: np.ndarray = (sum_xx - diag_x) / (n * (n - 1)) + (sum_yy - diag_y) / (m * (m - 1)) - 2.0 * sum_xy / (n * m)
        return mmd2

    observed = np.zeros((n + m, 1))
    observed[:n] = 1.0
    statistic = float(mmd2(observed)[0])
    pvalue = 1.0
    if n_permutations:
        memberships = np.zeros((n + m, n_permutations))
        for column in range(n_permutations):
            memberships[rng.permutation(n + m)[:n], column] = 1.0
        permuted = mmd2(memberships)
        pvalue = float((1 + np.sum(permuted >= statistic - 1e-12)) / (1 + n_permutations))
    return EmbeddingDrift(cosine, statistic, pvalue, bandwidth, n, m)


# -- sequential detectors for reward streams ------------------------------------------------------------------------


def _reward(x: float) -> float:
    value = float(x)
    if not math.isfinite(value):
        raise ValueError(f"a reward must be a finite number, got {x!r}")
    return value


def _check_state(state: Mapping[str, Any], kind: str, keys: Iterable[str]) -> None:
    if not isinstance(state, Mapping) or state.get("kind") != kind:
        found = state.get("kind") if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"not a {kind} state: its kind is {found!r}")
    missing = sorted(set(keys) - set(state))
    if missing:
        raise ValueError(f"{kind} state lacks {', '.join(missing)}")


class _SequentialDetector:
    """What the reward detectors share: the counters, and feeding a batch of rewards through `update`."""

    n_seen: int
    n_detections: int
    last_detection: int | None

    def update(self, x: float) -> bool:
        raise NotImplementedError

    def update_many(self, values: Iterable[float]) -> list[int]:
        """Feed rewards in order; the 0-based positions (in `values`) at which a change was signalled."""
        return [i for i, x in enumerate(values) if self.update(x)]

    def _reset_counts(self) -> None:
        self.n_seen = 0
        self.n_detections = 0
        self.last_detection = None


class PageHinkley(_SequentialDetector):
    """Page-Hinkley test (Page 1954; Mouss et al. 2004, Gama et al. 2013's form) for a change in the mean of a stream.

    With xbar_t the running mean since the last restart, it accumulates m_t = alpha m_(t-1) + (x_t - xbar_t - delta)
    (for a rise) and m'_t = alpha m'_(t-1) + (x_t - xbar_t + delta) (for a drop), and signals when m_t - min m > threshold
    (a rise) or max m' - m'_t > threshold (a drop), once `min_instances` points have been seen. `delta` is the size of
    change ignored (it pulls each sum away from the alarm); `threshold` (lambda) trades detection delay for false
    alarms and is in the units of the reward. The mean run between false alarms grows like exp(2 delta lambda /
    sigma^2) for a stream of variance sigma^2: the defaults (2 delta lambda / sigma^2 ~ 9) suit 0/1 rewards at a rate
    near 0.1 (sigma^2 = 0.09) and flag a drop from 0.10 to 0.05 about 1,000 points after it; for a rate of 0.3 raise
    lambda to ~90 or delta to keep that ratio (figures in tests/bench/bench_drift.py). alpha < 1 forgets old
    deviations (1: no forgetting). After a signal the statistics restart from the next point.
    """

    kind = "page_hinkley"

    def __init__(
        self,
        delta: float = 0.01,
        threshold: float = 40.0,
        min_instances: int = 30,
        alpha: float = 1.0,
        direction: Direction = "both",
    ) -> None:
        self.delta = _finite_float("delta", delta)
        self.threshold = _finite_float("threshold", threshold)
        if self.delta < 0:
            raise ValueError(f"delta must be >= 0, got {delta!r}")
        if self.threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {threshold!r}")
        self.min_instances = _positive_int("min_instances", min_instances)
        self.alpha = _finite_float("alpha", alpha)
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha (forgetting factor) must lie in (0, 1], got {alpha!r}")
        self.direction = _direction(direction)
        self.reset()

    def reset(self) -> None:
        """Back to a fresh detector: statistics and counters."""
        self._reset_counts()
        self._restart()

    def _restart(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.sum_up = 0.0
        self.min_up = 0.0
        self.sum_down = 0.0
        self.max_down = 0.0

    @property
    def estimate(self) -> float:
        """Mean of the stream since the last restart (0.0 before any point)."""
        return self.mean

    @property
    def statistic(self) -> float:
        """The current Page-Hinkley gap in the monitored direction(s); a signal when it exceeds `threshold`."""
        up, down = self.sum_up - self.min_up, self.max_down - self.sum_down
        return {"up": up, "down": down, "both": max(up, down)}[self.direction]

    def update(self, x: float) -> bool:
        """Take one reward; True when a change is signalled at this point (the statistics then restart)."""
        value = _reward(x)
        self.n_seen += 1
        self.n += 1
        self.mean += (value - self.mean) / self.n
        deviation = value - self.mean
        self.sum_up = self.alpha * self.sum_up + deviation - self.delta
        self.sum_down = self.alpha * self.sum_down + deviation + self.delta
        self.min_up = min(self.min_up, self.sum_up)
        self.max_down = max(self.max_down, self.sum_down)
        if self.n < self.min_instances or self.statistic <= self.threshold:
            return False
        self.n_detections += 1
        self.last_detection = self.n_seen
        self._restart()
        return True

    def to_dict(self) -> dict[str, Any]:
        """Parameters and state, JSON-able; `from_dict` continues exactly where this left off."""
        return {
            "kind": self.kind,
            "delta": self.delta,
            "threshold": self.threshold,
            "min_instances": self.min_instances,
            "alpha": self.alpha,
            "direction": self.direction,
            "n_seen": self.n_seen,
            "n_detections": self.n_detections,
            "last_detection": self.last_detection,
            "n": self.n,
            "mean": self.mean,
            "sum_up": self.sum_up,
            "min_up": self.min_up,
            "sum_down": self.sum_down,
            "max_down": self.max_down,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> PageHinkley:
        keys = (
            "delta",
            "threshold",
            "min_instances",
            "alpha",
            "direction",
            "n_seen",
            "n_detections",
            "n",
            "mean",
            "sum_up",
            "min_up",
            "sum_down",
            "max_down",
        )
        _check_state(state, cls.kind, keys)
        detector = cls(state["delta"], state["threshold"], state["min_instances"], state["alpha"], state["direction"])
        detector.n_seen = int(state["n_seen"])
        detector.n_detections = int(state["n_detections"])
        last = state.get("last_detection")
        detector.last_detection = None if last is None else int(last)
        detector.n = int(state["n"])
        for name in ("mean", "sum_up", "min_up", "sum_down", "max_down"):
            setattr(detector, name, _finite_float(name, state[name]))
        return detector


class Adwin(_SequentialDetector):
    """ADWIN (Bifet & Gavalda 2007), the exponential-histogram version (ADWIN2, as in MOA and river).

    Keeps a window of the recent stream whose mean is its estimate, compressed into buckets: level i holds up to
    `max_buckets` buckets of 2^i points each (their sum and sum of squared deviations), so a window of W points takes
    O(max_buckets log W) memory and time per update. Every `clock` points it tries each bucket boundary as a split
    into an older part (n0 points, mean u0) and a newer part (n1, u1) and drops the oldest bucket while some split has

        |u0 - u1| > sqrt(2 (1/n0' + 1/n1') var ln(2 ln(W) / delta)) + 2/3 (1/n0' + 1/n1') ln(2 ln(W) / delta),

    with var the window's variance and n' = n - min_window + 1 (the variance-aware Bernstein form of the paper's
    Hoeffding bound, as MOA uses). `delta` bounds the false-alarm probability per check; smaller means fewer false
    alarms and a longer delay. A cut signals a change; with `direction` "down" (or "up") only a cut where the newer
    mean is lower (higher) is signalled, though the window is cut either way so that the estimate stays current.
    """

    kind = "adwin"

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window: int = 5,
        grace_period: int = 10,
        direction: Direction = "both",
    ) -> None:
        self.delta = _finite_float("delta", delta)
        if not 0.0 < self.delta < 1.0:
            raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
        self.clock = _positive_int("clock", clock)
        self.max_buckets = _positive_int("max_buckets", max_buckets, 2)
        self.min_window = _positive_int("min_window", min_window)
        self.grace_period = _positive_int("grace_period", grace_period)
        self.direction = _direction(direction)
        self.reset()

    def reset(self) -> None:
        """Back to a fresh detector: empty window and counters."""
        self._reset_counts()
        self.width = 0
        self.total = 0.0
        self.variance_sum = 0.0  # sum of squared deviations from the window's mean
        # _sums[i][j], _m2s[i][j]: bucket j (oldest first) of level i, which holds 2^i points.
        self._sums: list[list[float]] = [[]]
        self._m2s: list[list[float]] = [[]]

    @property
    def estimate(self) -> float:
        """Mean of the current window (0.0 when it is empty)."""
        return self.total / self.width if self.width else 0.0

    @property
    def variance(self) -> float:
        """Variance of the current window."""
        return self.variance_sum / self.width if self.width else 0.0

    @property
    def n_buckets(self) -> int:
        return sum(len(level) for level in self._sums)

    def update(self, x: float) -> bool:
        """Take one reward; True when the window was cut at this point in the monitored direction."""
        value = _reward(x)
        self.n_seen += 1
        if self.width:
            self.variance_sum += self.width * (value - self.total / self.width) ** 2 / (self.width + 1)
        self.width += 1
        self.total += value
        self._sums[0].append(value)
        self._m2s[0].append(0.0)
        self._compress()
        if self.n_seen % self.clock or self.width <= max(self.grace_period, 1):
            return False
        if self._cut():
            self.n_detections += 1
            self.last_detection = self.n_seen
            return True
        return False

    def _compress(self) -> None:
        level = 0
        while len(self._sums[level]) > self.max_buckets:
            size = 2.0**level
            s1, s2 = self._sums[level].pop(0), self._sums[level].pop(0)
            v1, v2 = self._m2s[level].pop(0), self._m2s[level].pop(0)
            merged = v1 + v2 + size * size * (s1 / size - s2 / size) ** 2 / (2 * size)
            if level + 1 == len(self._sums):
                self._sums.append([])
                self._m2s.append([])
            self._sums[level + 1].append(s1 + s2)
            self._m2s[level + 1].append(merged)
            level += 1

    def _drop_oldest(self) -> None:
        level = len(self._sums) - 1
        while not self._sums[level]:
            level -= 1
        size = 2**level
        bucket_sum, bucket_m2 = self._sums[level].pop(0), self._m2s[level].pop(0)
        self.width -= size
        self.total -= bucket_sum
        if self.width:
            self.variance_sum -= bucket_m2 + size * self.width * (bucket_sum / size - self.total / self.width) ** 2 / (
                size + self.width
            )
            self.variance_sum = max(self.variance_sum, 0.0)
        else:
            self.total = self.variance_sum = 0.0
        while len(self._sums) > 1 and not self._sums[-1]:
            self._sums.pop()
            self._m2s.pop()

    def _cut(self) -> bool:
        signalled = False
        while self.width > max(self.grace_period, 1):
            split = self._find_split()
            if split is None:
                break
            newer_minus_older = split
            if (
                self.direction == "both"
                or (self.direction == "down" and newer_minus_older < 0)
                or (self.direction == "up" and newer_minus_older > 0)
            ):
                signalled = True
            self._drop_oldest()
        return signalled

    def _find_split(self) -> float | None:
        """u1 - u0 at the first bucket boundary (oldest first) where the two sides differ significantly; None if
        there is none."""
        width, total = self.width, self.total
        variance = self.variance_sum / width
        log_term = math.log(2.0 * math.log(width) / self.delta)
        n0, s0 = 0, 0.0
        last_level = 0
        for level in range(len(self._sums) - 1, -1, -1):
            if self._sums[level]:
                last_level = level
        for level in range(len(self._sums) - 1, -1, -1):
            size = 2**level
            buckets = self._sums[level]
            for j, bucket_sum in enumerate(buckets):
                if level == last_level and j == len(buckets) - 1:
                    return None  # the newest bucket: no newer part left
                n0 += size
                s0 += bucket_sum
                n1 = width - n0
                if n0 < self.min_window or n1 < self.min_window:
                    continue
                gap: float = (total - s0) / n1 - s0 / n0
                m_recip = 1.0 / (n0 - self.min_window + 1) + 1.0 / (n1 - self.min_window + 1)
                epsilon = math.sqrt(2.0 * m_recip * variance * log_term) + 2.0 / 3.0 * log_term * m_recip
                if abs(gap) > epsilon:
                    return gap
        return None

    def to_dict(self) -> dict[str, Any]:
        """Parameters and state (buckets per level, oldest first), JSON-able; `from_dict` continues exactly."""
        return {
            "kind": self.kind,
            "delta": self.delta,
            "clock": self.clock,
            "max_buckets": self.max_buckets,
            "min_window": self.min_window,
            "grace_period": self.grace_period,
            "direction": self.direction,
            "n_seen": self.n_seen,
            "n_detections": self.n_detections,
            "last_detection": self.last_detection,
            "width": self.width,
            "total": self.total,
            "variance_sum": self.variance_sum,
            "bucket_sums": [list(level) for level in self._sums],
            "bucket_m2s": [list(level) for level in self._m2s],
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Adwin:
        keys = (
            "delta",
            "clock",
            "max_buckets",
            "min_window",
            "grace_period",
            "direction",
            "n_seen",
            "n_detections",
            "width",
            "total",
            "variance_sum",
            "bucket_sums",
            "bucket_m2s",
        )
        _check_state(state, cls.kind, keys)
        detector = cls(
            state["delta"], state["clock"], state["max_buckets"], state["min_window"], state["grace_period"], state["direction"]
        )
        sums = [[float(v) for v in level] for level in state["bucket_sums"]]
        m2s = [[float(v) for v in level] for level in state["bucket_m2s"]]
        if not sums or [len(level) for level in sums] != [len(level) for level in m2s]:
            raise ValueError("adwin state: bucket_sums and bucket_m2s must be non-empty lists of equal shape")
        width = sum(len(level) * 2**i for i, level in enumerate(sums))
        if width != int(state["width"]):
            raise ValueError(f"adwin state: the buckets hold {width} points, but width says {state['width']}")
        detector._sums, detector._m2s = sums, m2s
        detector.n_seen = int(state["n_seen"])
        detector.n_detections = int(state["n_detections"])
        last = state.get("last_detection")
        detector.last_detection = None if last is None else int(last)
        detector.width = width
        detector.total = _finite_float("total", state["total"])
        detector.variance_sum = _finite_float("variance_sum", state["variance_sum"])
        return detector


# -- the report ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftThresholds:
    """When a feature counts as drifted, and the reward detectors' parameters. Why these values:

    - numeric: PSI > `psi` (0.2: between the usual 'moderate' 0.1 and 'major' 0.25), or KS p-value < `ks_pvalue`
      and KS statistic > `ks_statistic`. The p-value alone flags a 0.01 CDF gap at 100k rows a side; the statistic
      alone is noisy on small samples; both together mean a real and sizeable shift.
    - categorical: chi-square p-value < `chi2_pvalue` and Jensen-Shannon distance (sqrt of the base-2 divergence)
      > `js_distance`, for the same reason. A JS distance of 0.1 is a divergence of 0.01: a strategy mix going from
      90/10 to 80/20 is a distance of 0.12 (divergence 0.014); a divergence of 0.1 would need 90/10 to pass 60/40.
    - embedding: MMD permutation p-value < `mmd_pvalue` on at most `embedding_max_samples` rows a side (the cap
      keeps the cost and the power bounded, so no separate effect-size floor is needed).
    - a feature with fewer than `min_samples` rows (or counted observations) on either side is not judged (PSI of
      two samples of one distribution is ~(bins - 1)/n: 0.09 at 100 live rows).
    - rewards: Page-Hinkley and ADWIN watching for a drop (`reward_direction`), parameters as their classes say.
    """

    psi: float = 0.2
    psi_bins: int = 10
    ks_pvalue: float = 0.01
    ks_statistic: float = 0.1
    chi2_pvalue: float = 0.01
    js_distance: float = 0.1
    mmd_pvalue: float = 0.01
    embedding_max_samples: int = 500
    mmd_permutations: int = 200
    min_samples: int = 200
    ph_delta: float = 0.01
    ph_threshold: float = 40.0
    ph_min_instances: int = 30
    ph_alpha: float = 1.0
    adwin_delta: float = 0.002
    adwin_clock: int = 32
    reward_direction: Direction = "down"

    def __post_init__(self) -> None:
        for name in ("ks_pvalue", "chi2_pvalue", "mmd_pvalue"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in (0, 1), got {getattr(self, name)!r}")
        for name in ("ks_statistic", "js_distance"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)!r}")
        if not self.psi > 0:
            raise ValueError(f"psi threshold must be > 0, got {self.psi!r}")
        _positive_int("psi_bins", self.psi_bins, 2)
        _positive_int("embedding_max_samples", self.embedding_max_samples, 2)
        _positive_int("mmd_permutations", self.mmd_permutations, 1)
        _positive_int("min_samples", self.min_samples, 1)
        _direction(self.reward_direction)
        self.page_hinkley()  # the detectors check their own parameters
        self.adwin()

    def page_hinkley(self) -> PageHinkley:
        return PageHinkley(self.ph_delta, self.ph_threshold, self.ph_min_instances, self.ph_alpha, self.reward_direction)

    def adwin(self) -> Adwin:
        return Adwin(self.adwin_delta, self.adwin_clock, direction=self.reward_direction)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's verdict: its statistics, the thresholds they were held to, and why it drifted (if it did).
    `note` says why a feature was not judged (too few rows)."""

    name: str
    kind: str
    statistics: Mapping[str, float]
    thresholds: Mapping[str, float]
    drifted: bool
    reasons: tuple[str, ...] = ()
    n_reference: int = 0
    n_live: int = 0
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "drifted": self.drifted,
            "reasons": list(self.reasons),
            "statistics": dict(self.statistics),
            "thresholds": dict(self.thresholds),
            "n_reference": self.n_reference,
            "n_live": self.n_live,
            "note": self.note,
        }


@dataclass(frozen=True)
class DriftReport:
    """Per-feature verdicts; drifted when any feature drifted."""

    features: tuple[FeatureDrift, ...] = field(default_factory=tuple)

    @property
    def drifted(self) -> bool:
        return any(feature.drifted for feature in self.features)

    @property
    def reasons(self) -> list[str]:
        """One line per reason, 'feature: why'."""
        return [f"{feature.name}: {reason}" for feature in self.features if feature.drifted for reason in feature.reasons]

    def __getitem__(self, name: str) -> FeatureDrift:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    def merged(self, *others: DriftReport | FeatureDrift) -> DriftReport:
        """This report with the features of other reports (or single results, e.g. from `reward_drift`) appended."""
        extra: list[FeatureDrift] = []
        for other in others:
            extra += [other] if isinstance(other, FeatureDrift) else list(other.features)
        return DriftReport(self.features + tuple(extra))

    def to_dict(self) -> dict[str, Any]:
        return {"drifted": self.drifted, "reasons": self.reasons, "features": [feature.to_dict() for feature in self.features]}


def _numeric(name: str, reference: object, live: object, limits: DriftThresholds) -> FeatureDrift:
    ref, now = _sample(f"{name}: reference", reference), _sample(f"{name}: live", live)
    thresholds = {"psi": limits.psi, "ks_pvalue": limits.ks_pvalue, "ks_statistic": limits.ks_statistic}
    if min(ref.size, now.size) < limits.min_samples:
        return _skipped(name, "numeric", thresholds, ref.size, now.size, limits)
    index = psi(ref, now, limits.psi_bins)
    ks = ks_two_sample(ref, now)
    reasons = []
    if index > limits.psi:
        reasons.append(f"PSI {index:.3f} > {limits.psi}")
    if ks.pvalue < limits.ks_pvalue and ks.statistic > limits.ks_statistic:
        reasons.append(
            f"KS statistic {ks.statistic:.3f} > {limits.ks_statistic} with p-value {ks.pvalue:.2g} < {limits.ks_pvalue}"
        )
    statistics = {
        "psi": index,
        "ks_statistic": ks.statistic,
        "ks_pvalue": ks.pvalue,
        "reference_mean": float(ref.mean()),
        "live_mean": float(now.mean()),
    }
    return FeatureDrift(name, "numeric", statistics, thresholds, bool(reasons), tuple(reasons), ref.size, now.size)


def _categorical(name: str, reference: object, live: object, limits: DriftThresholds) -> FeatureDrift:
    if not isinstance(reference, Mapping) and _is_labels(reference):
        reference = category_counts(reference)
    if not isinstance(live, Mapping) and _is_labels(live):
        live = category_counts(live)
    try:
        _, ref, now = align_counts(reference, live)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from exc
    thresholds = {"chi2_pvalue": limits.chi2_pvalue, "js_distance": limits.js_distance}
    n_ref, n_now = round(ref.sum()), round(now.sum())
    if min(n_ref, n_now) < limits.min_samples:
        return _skipped(name, "categorical", thresholds, n_ref, n_now, limits)
    divergence = js_divergence(ref, now)
    chi2 = chi_square_test(ref, now)
    reasons = []
    if chi2.pvalue < limits.chi2_pvalue and math.sqrt(divergence) > limits.js_distance:
        reasons.append(
            f"JS distance {math.sqrt(divergence):.3f} > {limits.js_distance} with chi-square p-value"
            f" {chi2.pvalue:.2g} < {limits.chi2_pvalue}"
        )
    statistics = {
        "js_divergence": divergence,
        "js_distance": math.sqrt(divergence),
        "chi2_statistic": chi2.statistic,
        "chi2_dof": float(chi2.dof),
        "chi2_pvalue": chi2.pvalue,
    }
    return FeatureDrift(name, "categorical", statistics, thresholds, bool(reasons), tuple(reasons), n_ref, n_now)


def _embedding(name: str, reference: object, live: object, limits: DriftThresholds, seed: int) -> FeatureDrift:
    thresholds = {"mmd_pvalue": limits.mmd_pvalue}
    ref, now = _embeddings(f"{name}: ", reference, live)
    n_ref, n_now = ref.shape[0], now.shape[0]
    if min(n_ref, n_now) < limits.min_samples:
        return _skipped(name, "embedding", thresholds, n_ref, n_now, limits)
    result = _embedding_drift(ref, now, limits.embedding_max_samples, limits.mmd_permutations, seed)
    reasons = []
    if result.mmd_pvalue < limits.mmd_pvalue:
        reasons.append(
            f"MMD^2 {result.mmd2:.4f} with permutation p-value {result.mmd_pvalue:.2g} < {limits.mmd_pvalue}"
            f" (mean cosine distance {result.mean_cosine_distance:.3f})"
        )
    statistics = {
        "mmd2": result.mmd2,
        "mmd_pvalue": result.mmd_pvalue,
        "bandwidth": result.bandwidth,
        "mean_cosine_distance": result.mean_cosine_distance,
    }
    return FeatureDrift(name, "embedding", statistics, thresholds, bool(reasons), tuple(reasons), n_ref, n_now)


def _skipped(
    name: str, kind: str, thresholds: dict[str, float], n_ref: int, n_now: int, limits: DriftThresholds
) -> FeatureDrift:
    note = f"not judged: {min(n_ref, n_now)} rows on one side, fewer than min_samples {limits.min_samples}"
    return FeatureDrift(name, kind, {}, thresholds, False, (), n_ref, n_now, note)


def _is_labels(values: object) -> TypeGuard[Iterable[Any]]:
    """Whether `values` are raw labels: an array (or list) of strings, objects or booleans."""
    return np.asarray(values).dtype.kind in "OUSb"


def infer_kind(values: object) -> FeatureKind:
    """categorical for a mapping (counts) or an array of strings/objects (raw labels), embedding for a 2-D array,
    numeric otherwise. Aligned count arrays look numeric: name their kind in `feature_drift(kinds=...)`."""
    if isinstance(values, Mapping) or _is_labels(values):
        return "categorical"
    return "embedding" if np.asarray(values).ndim == 2 else "numeric"


def feature_drift(
    reference: Mapping[str, Any],
    live: Mapping[str, Any],
    thresholds: DriftThresholds | None = None,
    kinds: Mapping[str, FeatureKind] | None = None,
    seed: int = 0,
) -> DriftReport:
    """Compare each feature of `live` with the same feature of `reference` and say which drifted.

    A feature's value is a 1-D numeric sample (numeric: PSI and KS; model scores too), a mapping category -> count
    or an array of raw labels (categorical: chi-square and Jensen-Shannon), or a 2-D array of rows (embedding: MMD and
    mean cosine distance); `infer_kind` guesses and `kinds` overrides (needed for aligned count arrays, which look
    numeric). Both sides must name the same features. `seed` fixes the embedding subsamples and permutations."""
    limits = thresholds if thresholds is not None else DriftThresholds()
    kinds = dict(kinds or {})
    if set(reference) != set(live):
        only_ref, only_live = sorted(set(reference) - set(live)), sorted(set(live) - set(reference))
        raise ValueError(
            f"reference and live must name the same features: only in reference {only_ref}, only in live {only_live}"
        )
    unknown = sorted(set(kinds) - set(reference))
    if unknown:
        raise ValueError(f"kinds names features that are not in the samples: {unknown}")
    results = []
    for name in reference:
        kind = kinds.get(name) or infer_kind(reference[name])
        if kind not in _KINDS:
            raise ValueError(f"{name}: kind must be one of {', '.join(_KINDS)}, got {kind!r}")
        if kind == "numeric":
            results.append(_numeric(name, reference[name], live[name], limits))
        elif kind == "categorical":
            results.append(_categorical(name, reference[name], live[name], limits))
        else:
            results.append(_embedding(name, reference[name], live[name], limits, seed))
    return DriftReport(tuple(results))


def reward_drift(name: str, detector: PageHinkley | Adwin, rewards: Iterable[float]) -> FeatureDrift:
    """Feed a batch of new rewards to a (restored) detector; the result says whether it signalled a change in this
    batch. The detector is updated in place: save `detector.to_dict()` afterwards."""
    n_before = detector.n_seen
    before = detector.estimate
    changes = detector.update_many(rewards)
    reasons = tuple(f"{type(detector).__name__} signalled a change at point {n_before + i + 1}" for i in changes)
    if changes:
        reasons += (f"reward estimate {before:.4g} before this batch, {detector.estimate:.4g} now",)
    statistics = {
        "estimate_before": before,
        "estimate": detector.estimate,
        "changes": float(len(changes)),
        "n_detections": float(detector.n_detections),
    }
    params = {"delta": detector.delta}
    if isinstance(detector, PageHinkley):
        params["threshold"] = detector.threshold
    return FeatureDrift(name, "reward", statistics, params, bool(changes), reasons, n_before, detector.n_seen - n_before)
