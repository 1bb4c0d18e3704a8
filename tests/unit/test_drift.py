"""Drift statistics: exact against scipy where it is installed (known values otherwise), quiet on samples of one
distribution, loud on shifted ones; the reward detectors on Bernoulli streams."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rtrec.domain.drift import (
    Adwin,
    DriftReport,
    DriftThresholds,
    FeatureDrift,
    PageHinkley,
    align_counts,
    category_counts,
    chi2_sf,
    chi_square_test,
    embedding_drift,
    feature_drift,
    gamma_q,
    infer_kind,
    js_distance,
    js_divergence,
    kolmogorov_sf,
    ks_sf,
    ks_two_sample,
    psi,
    quantile_bins,
    reward_drift,
)

try:
    from scipy import spatial, special, stats
except ImportError:  # the core does not need scipy; the known values below still check the numbers
    stats = special = spatial = None

needs_scipy = pytest.mark.skipif(stats is None, reason="scipy is not installed")

# Values from scipy 1.17: stats.kstwo.sf(d, n), stats.chi2.sf(x, k), special.kolmogorov(z).
KSTWO_SF = [
    ((0.05, 500), 0.15866260223815387),
    ((0.1, 250), 0.01252034472993464),
    ((0.02, 5000), 0.03613941395325637),
    ((0.15, 120), 0.008029227977457063),
]
CHI2_SF = [
    ((3.0, 1), 0.08326451666355042),
    ((10.0, 4), 0.04042768199451279),
    ((30.0, 17), 0.026345078283536126),
    ((150.0, 120), 0.03307348091130466),
    ((0.5, 3), 0.9188914116546758),
]
KOLMOGOROV_SF = [
    (0.5, 0.9639452436648751),
    (1.0, 0.26999967167735456),
    (1.36, 0.049485876755377876),
    (1.63, 0.009846364888486529),
]


# -- the distributions --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "expected"), KSTWO_SF)
def test_ks_sf_matches_known_values(args, expected):
    assert ks_sf(*args) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(("args", "expected"), CHI2_SF)
def test_chi2_sf_matches_known_values(args, expected):
    assert chi2_sf(*args) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize(("z", "expected"), KOLMOGOROV_SF)
def test_kolmogorov_sf_matches_known_values(z, expected):
    assert kolmogorov_sf(z) == pytest.approx(expected, rel=1e-10)


@needs_scipy
def test_ks_sf_tracks_scipy_kstwo_over_its_range():
    for n in (100, 1_000, 4_000):  # scipy's exact kstwo gets slow beyond (seconds at 50,000)
        d = np.linspace(0.2, 3.0, 60) / math.sqrt(n)
        ours = np.array([ks_sf(x, n) for x in d])
        theirs = stats.kstwo.sf(d, n)
        assert np.max(np.abs(ours - theirs)) < 1e-5
        significant = (theirs > 1e-6) & (theirs < 0.1)  # where decisions are made: relative error matters
        assert np.max(np.abs(ours - theirs)[significant] / theirs[significant]) < 0.02
    assert np.allclose(
        kolmogorov_sf(np.linspace(0.05, 4, 200)), special.kolmogorov(np.linspace(0.05, 4, 200)), rtol=1e-10, atol=1e-15
    )


@needs_scipy
def test_gamma_q_and_chi2_sf_match_scipy_including_large_shapes():
    for a in (0.5, 1.0, 2.5, 10.0, 50.0, 500.0, 5_000.0):
        for x in (0.01, 0.5, 1.0, 3.0, 10.0, 40.0, 100.0, 600.0, 6_000.0):
            expected = special.gammaincc(a, x)
            assert gamma_q(a, x) == pytest.approx(expected, rel=1e-9, abs=1e-300)
    for k in (1, 2, 7, 30, 400):
        for x in (0.1, k * 0.5, k, k * 2.0, k + 10 * math.sqrt(2 * k)):
            assert chi2_sf(x, k) == pytest.approx(stats.chi2.sf(x, k), rel=1e-9, abs=1e-300)


def test_incomplete_gamma_edges_and_bad_arguments():
    assert gamma_q(3.0, 0.0) == 1.0
    assert gamma_q(1.0, 2.0) == pytest.approx(math.exp(-2.0), rel=1e-12)  # Q(1, x) = e^-x
    with pytest.raises(ValueError, match="a > 0"):
        gamma_q(0.0, 1.0)
    with pytest.raises(ValueError, match="x >= 0"):
        gamma_q(1.0, -1.0)
    with pytest.raises(ValueError, match="non-negative"):
        chi2_sf(-1.0, 3)
    with pytest.raises(ValueError, match="dof"):
        chi2_sf(1.0, 0)


# -- numeric: PSI and KS ------------------------------------------------------------------------------------------


def test_psi_by_hand_on_two_bins():
    reference = np.array([0.0] * 50 + [1.0] * 50)  # median cut at 0.5: shares 0.5 / 0.5
    live = np.array([0.0] * 20 + [1.0] * 80)  # shares 0.2 / 0.8
    expected = (0.2 - 0.5) * math.log(0.2 / 0.5) + (0.8 - 0.5) * math.log(0.8 / 0.5)
    assert psi(reference, live, n_bins=2) == pytest.approx(expected, rel=1e-12)
    assert psi(reference, reference, n_bins=2) == 0.0


def test_psi_quiet_on_one_distribution_and_loud_on_a_shift():
    rng = np.random.default_rng(7)
    reference = rng.normal(size=20_000)
    same = psi(reference, rng.normal(size=5_000))
    assert same < 0.02  # expected about 9 (1/20000 + 1/5000) = 0.002; 10x margin
    assert psi(reference, rng.normal(0.5, 1.0, size=5_000)) > 0.2
    assert psi(reference, rng.normal(0.0, 2.0, size=5_000)) > 0.2  # a wider spread, same mean
    assert 0.1 > psi(reference, rng.normal(0.2, 1.0, size=5_000)) > 0.02  # a small shift reads small


def test_psi_on_a_constant_or_tied_reference_sees_moves_both_ways():
    constant = np.full(1_000, 3.0)
    cuts, atoms = quantile_bins(constant)
    assert cuts.tolist() == [3.0]
    assert atoms.tolist() == [True]
    assert psi(constant, np.full(500, 3.0)) == 0.0
    assert psi(constant, np.full(500, 4.0)) > 5.0
    assert psi(constant, np.full(500, 2.0)) > 5.0
    rng = np.random.default_rng(1)
    mostly_zero = np.where(rng.random(10_000) < 0.8, 0.0, rng.exponential(size=10_000))
    assert psi(mostly_zero, np.where(rng.random(5_000) < 0.8, 0.0, rng.exponential(size=5_000))) < 0.02
    assert psi(mostly_zero, np.where(rng.random(5_000) < 0.4, 0.0, rng.exponential(size=5_000))) > 0.2


@needs_scipy
@pytest.mark.parametrize(
    ("n_ref", "n_live", "shift"),
    [(300, 500, 0.0), (1_000, 1_000, 0.1), (5_000, 200, 0.2), (20_000, 20_000, 0.03), (150, 150, 0.0)],
)
def test_ks_two_sample_matches_scipy_asymp(n_ref, n_live, shift):
    rng = np.random.default_rng(n_ref + n_live)
    reference, live = rng.normal(size=n_ref), rng.normal(shift, 1.0, size=n_live)
    expected = stats.ks_2samp(reference, live, method="asymp")
    ours = ks_two_sample(reference, live)
    assert ours.statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert ours.pvalue == pytest.approx(expected.pvalue, rel=1e-3, abs=1e-5)


@needs_scipy
def test_ks_two_sample_with_ties_matches_scipy():
    rng = np.random.default_rng(3)
    reference, live = rng.integers(0, 5, 1_000), rng.integers(0, 5, 800)
    expected = stats.ks_2samp(reference, live, method="asymp")
    ours = ks_two_sample(reference, live)
    assert ours.statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert ours.pvalue == pytest.approx(expected.pvalue, rel=1e-3, abs=1e-5)


def test_ks_two_sample_by_hand():
    result = ks_two_sample([1.0, 2.0, 3.0, 4.0], [3.5, 4.5, 5.5, 6.5])
    assert result.statistic == 0.75  # at 3: 3/4 of the reference, 0 of the live sample
    assert result.effective_n == 2
    assert ks_two_sample(np.arange(100.0), np.arange(100.0)).pvalue == 1.0


# -- categorical --------------------------------------------------------------------------------------------------


def test_counts_align_on_the_union_of_categories():
    categories, reference, live = align_counts({"drama": 5, "comedy": 3}, {"comedy": 4, "horror": 1})
    assert categories == ["drama", "comedy", "horror"]
    assert reference.tolist() == [5, 3, 0]
    assert live.tolist() == [0, 4, 1]
    assert category_counts(["a", "b", "a"]) == {"a": 2, "b": 1}


def test_js_divergence_by_hand_and_bounds():
    assert js_divergence({"a": 1}, {"b": 1}) == pytest.approx(1.0)  # disjoint supports
    assert js_divergence([3, 1], [6, 2]) == 0.0  # same shares
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    m = (p + q) / 2
    expected = 0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m))
    assert js_divergence(p, q) == pytest.approx(expected, rel=1e-12)
    assert js_distance(p, q) == pytest.approx(math.sqrt(expected), rel=1e-12)


@needs_scipy
def test_categorical_statistics_match_scipy():
    reference, live = {"a": 100, "b": 50, "c": 0, "e": 7}, {"a": 80, "b": 70, "d": 5, "e": 9}
    table = np.array([[100, 50, 7, 0], [80, 70, 9, 5]])  # a, b, e, d (c is empty on both sides)
    expected = stats.chi2_contingency(table, correction=False)
    ours = chi_square_test(reference, live)
    assert ours.dof == expected.dof == 3
    assert ours.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert ours.pvalue == pytest.approx(expected.pvalue, rel=1e-9)
    assert js_divergence(reference, live) == pytest.approx(
        spatial.distance.jensenshannon([100, 50, 0, 7, 0], [80, 70, 0, 9, 5], base=2) ** 2, rel=1e-10
    )


def test_chi_square_with_a_single_category_has_nothing_to_test():
    assert chi_square_test({"a": 5}, {"a": 9}).pvalue == 1.0


# -- embeddings ---------------------------------------------------------------------------------------------------


def test_embedding_drift_quiet_on_one_distribution_loud_on_a_shift_and_seeded():
    rng = np.random.default_rng(11)
    reference, same = rng.normal(size=(3_000, 16)), rng.normal(size=(2_000, 16))
    quiet = embedding_drift(reference, same)
    assert quiet.mmd_pvalue > 0.05
    assert (quiet.n_reference_used, quiet.n_live_used) == (500, 500)  # capped
    assert embedding_drift(reference, same) == quiet  # seeded: the same subsamples and permutations
    as_float32 = embedding_drift(reference.astype(np.float32), same.astype(np.float32))
    assert as_float32.mmd2 == pytest.approx(quiet.mmd2, rel=1e-4, abs=1e-6)
    loud = embedding_drift(reference, same + 0.3)
    assert loud.mmd_pvalue < 0.01
    assert loud.mmd2 > 10 * abs(quiet.mmd2)
    assert embedding_drift(np.ones((10, 3)), np.ones((10, 3))).mmd2 == pytest.approx(0.0, abs=1e-12)


def test_mmd_by_hand_with_the_median_heuristic():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(6, 3)), rng.normal(0.5, 1.0, size=(5, 3))
    pooled = np.vstack([x, y])
    distance = np.sqrt(((pooled[:, None, :] - pooled[None, :, :]) ** 2).sum(axis=2))
    width = float(np.median(distance[np.triu_indices(11, k=1)]))
    kernel = np.exp(-(distance**2) / (2 * width**2))
    kxx, kyy, kxy = kernel[:6, :6], kernel[6:, 6:], kernel[:6, 6:]
    expected = (kxx.sum() - 6) / 30 + (kyy.sum() - 5) / 20 - 2 * kxy.mean()
    result = embedding_drift(x, y, n_permutations=0)
    assert result.bandwidth == pytest.approx(width, rel=1e-9)
    assert result.mmd2 == pytest.approx(expected, rel=1e-9)
    assert result.mmd_pvalue == 1.0  # no permutations, no test


def test_mean_cosine_distance_of_rotated_embeddings():
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(400, 2)) * 0.1 + np.array([1.0, 0.0])
    rotated = rng.normal(size=(400, 2)) * 0.1 + np.array([0.0, 1.0])
    result = embedding_drift(reference, rotated, n_permutations=50)
    assert result.mean_cosine_distance == pytest.approx(1.0, abs=0.05)
    assert result.mmd_pvalue < 0.05  # the smallest p-value 50 permutations can give is 1/51


# -- sequential detectors -----------------------------------------------------------------------------------------


def bernoulli(rng: np.random.Generator, rates_and_lengths: list[tuple[float, int]]) -> np.ndarray:
    return np.concatenate([(rng.random(n) < p).astype(float) for p, n in rates_and_lengths])


DETECTORS = {
    "page_hinkley": lambda: PageHinkley(direction="down"),
    "page_hinkley_two_sided": lambda: PageHinkley(direction="both"),
    "adwin": lambda: Adwin(),
    "adwin_down": lambda: Adwin(direction="down"),
}


@pytest.mark.parametrize("make", DETECTORS.values(), ids=DETECTORS.keys())
def test_detectors_stay_quiet_on_a_stationary_stream(make):
    detector = make()
    assert detector.update_many(bernoulli(np.random.default_rng(2024), [(0.10, 20_000)])) == []
    assert detector.n_detections == 0
    assert detector.estimate == pytest.approx(0.10, abs=0.01)


@pytest.mark.parametrize("make", DETECTORS.values(), ids=DETECTORS.keys())
def test_detectors_flag_a_drop_in_the_rate_within_a_bounded_delay(make):
    detector = make()
    changes = detector.update_many(bernoulli(np.random.default_rng(5), [(0.10, 5_000), (0.05, 10_000)]))
    assert changes, "the drop from 0.10 to 0.05 went unnoticed"
    assert 5_000 <= changes[0] < 5_000 + 2_500  # nothing before the change; over 100 seeds the slowest took ~2,200
    assert detector.n_detections == len(changes)
    assert detector.last_detection == changes[-1] + 1


def test_adwin_window_shrinks_to_the_new_regime_and_stays_logarithmic():
    detector = Adwin()
    detector.update_many(bernoulli(np.random.default_rng(8), [(0.10, 5_000), (0.05, 3_000)]))
    assert detector.width < 5_000  # the old regime was dropped
    assert detector.estimate == pytest.approx(0.05, abs=0.015)
    detector.update_many(bernoulli(np.random.default_rng(9), [(0.05, 60_000)]))
    assert detector.width > 50_000
    assert detector.n_buckets <= detector.max_buckets * (math.log2(detector.width) + 1)


def test_adwin_window_statistics_equal_those_of_the_points_it_kept():
    stream = bernoulli(np.random.default_rng(10), [(0.30, 3_000), (0.10, 2_000)]) + np.random.default_rng(10).normal(
        0.0, 0.1, size=5_000
    )
    detector = Adwin()
    assert detector.update_many(stream)
    kept = stream[-detector.width :]
    assert detector.width < 5_000
    assert detector.estimate == pytest.approx(kept.mean(), rel=1e-9)
    assert detector.variance == pytest.approx(kept.var(), rel=1e-9)


def test_direction_down_ignores_a_rise_that_two_sided_detectors_flag():
    stream = bernoulli(np.random.default_rng(4), [(0.05, 5_000), (0.15, 5_000)])
    for down, both in (
        (PageHinkley(direction="down"), PageHinkley(direction="both")),
        (Adwin(direction="down"), Adwin(direction="both")),
    ):
        assert down.update_many(stream) == []
        assert both.update_many(stream)


def test_page_hinkley_forgetting_and_up_direction():
    stream = bernoulli(np.random.default_rng(6), [(0.10, 5_000), (0.20, 5_000)])
    assert PageHinkley(direction="up", alpha=0.999).update_many(stream)
    assert PageHinkley(direction="up").update_many(stream)[0] >= 5_000


@pytest.mark.parametrize("make", [lambda: PageHinkley(direction="down"), lambda: Adwin()], ids=["ph", "adwin"])
def test_state_round_trips_through_json_and_continues_identically(make):
    stream = bernoulli(np.random.default_rng(12), [(0.10, 5_000), (0.05, 6_000), (0.10, 6_000)])
    whole = make()
    expected = whole.update_many(stream)
    assert expected  # the stream has changes to find
    first, changes = make(), []
    for start in range(0, stream.size, 3_000):  # one scheduled run per 3,000 rewards, state in S3 between them
        changes += [start + i for i in first.update_many(stream[start : start + 3_000])]
        first = type(first).from_dict(json.loads(json.dumps(first.to_dict())))
    assert changes == expected
    assert first.to_dict() == whole.to_dict()
    first.reset()
    assert first.to_dict() == make().to_dict()


def test_detector_state_and_input_are_checked():
    with pytest.raises(ValueError, match="not a adwin state"):
        Adwin.from_dict(PageHinkley().to_dict())
    state = Adwin().to_dict()
    del state["bucket_sums"]
    with pytest.raises(ValueError, match="lacks bucket_sums"):
        Adwin.from_dict(state)
    broken = Adwin()
    broken.update_many([1.0] * 40)
    state = broken.to_dict()
    state["width"] = 7
    with pytest.raises(ValueError, match="buckets hold 40 points"):
        Adwin.from_dict(state)
    for detector in (PageHinkley(), Adwin()):
        with pytest.raises(ValueError, match="finite"):
            detector.update(float("nan"))
    with pytest.raises(ValueError, match="direction"):
        PageHinkley(direction="sideways")
    with pytest.raises(ValueError, match="alpha"):
        PageHinkley(alpha=0.0)
    with pytest.raises(ValueError, match="delta"):
        Adwin(delta=1.5)


# -- the report ---------------------------------------------------------------------------------------------------


def samples(
    rng: np.random.Generator,
    n: int,
    *,
    shift: float = 0.0,
    mix: tuple[float, ...] = (0.5, 0.3, 0.2),
    embedding_shift: float = 0.0,
) -> dict[str, object]:
    genres = rng.choice(["drama", "comedy", "horror"], size=n, p=list(mix))
    return {
        "age": rng.normal(35 + shift, 10, size=n),
        "score": rng.beta(2, 5, size=n),
        "genre": category_counts(genres),
        "user_embedding": rng.normal(embedding_shift, 1.0, size=(n, 8)),
    }


def test_feature_drift_is_quiet_on_samples_of_one_distribution():
    rng = np.random.default_rng(21)
    report = feature_drift(samples(rng, 5_000), samples(rng, 2_000))
    assert not report.drifted, report.reasons
    assert [f.kind for f in report.features] == ["numeric", "numeric", "categorical", "embedding"]
    assert report["age"].statistics["psi"] < 0.05  # margin: the threshold is 0.2
    assert report["genre"].statistics["js_distance"] < 0.05  # margin: the threshold is 0.1


def test_feature_drift_flags_what_moved_and_says_why():
    rng = np.random.default_rng(22)
    report = feature_drift(samples(rng, 5_000), samples(rng, 2_000, shift=8.0, mix=(0.2, 0.3, 0.5), embedding_shift=0.3))
    assert report.drifted
    assert {f.name for f in report.features if f.drifted} == {"age", "genre", "user_embedding"}
    assert any(reason.startswith("age: PSI") for reason in report.reasons)
    assert any(reason.startswith("age: KS statistic") for reason in report.reasons)
    assert any(reason.startswith("genre: JS distance") for reason in report.reasons)
    payload = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert payload["drifted"] is True
    assert len(payload["features"]) == 4
    assert payload["features"][0]["thresholds"] == {"psi": 0.2, "ks_pvalue": 0.01, "ks_statistic": 0.1}


def test_a_tiny_shift_in_a_huge_sample_is_significant_but_not_drift():
    rng = np.random.default_rng(23)
    reference, live = rng.normal(size=100_000), rng.normal(0.03, 1.0, size=100_000)
    feature = feature_drift({"x": reference}, {"x": live})["x"]
    assert feature.statistics["ks_pvalue"] < 0.01  # "significant"
    assert feature.statistics["ks_statistic"] < 0.1
    assert feature.statistics["psi"] < 0.2
    assert not feature.drifted


def test_feature_drift_takes_aligned_counts_raw_labels_and_skips_tiny_samples():
    assert infer_kind({"a": 1}) == "categorical"
    assert infer_kind(["x", "y"]) == "categorical"
    assert infer_kind(np.zeros((3, 2))) == "embedding"
    assert infer_kind([1.0, 2.0]) == "numeric"
    report = feature_drift(
        {"strategy": [900, 100], "genre": ["a"] * 300 + ["b"] * 300, "rare": np.arange(50.0)},
        {"strategy": [600, 400], "genre": ["a"] * 310 + ["b"] * 290, "rare": np.arange(50.0) + 100},
        kinds={"strategy": "categorical"},
    )
    assert report["strategy"].drifted
    assert report["strategy"].kind == "categorical"
    assert not report["genre"].drifted
    assert not report["rare"].drifted
    assert "min_samples 200" in report["rare"].note


def test_reward_drift_runs_a_restored_detector_and_joins_the_report():
    limits = DriftThresholds()
    detector = limits.page_hinkley()
    rng = np.random.default_rng(31)
    quiet = reward_drift("ctr", detector, bernoulli(rng, [(0.10, 5_000)]))
    assert not quiet.drifted
    assert quiet.n_live == 5_000
    restored = PageHinkley.from_dict(json.loads(json.dumps(detector.to_dict())))
    loud = reward_drift("ctr", restored, bernoulli(rng, [(0.04, 5_000)]))
    assert loud.drifted
    assert loud.n_reference == 5_000
    report = DriftReport().merged(quiet, DriftReport((loud,)))
    assert report.drifted
    assert report.reasons[0].startswith("ctr: PageHinkley signalled a change at point")


def test_bad_input_is_refused_with_a_clear_message():
    good = np.arange(300.0)
    with pytest.raises(ValueError, match="live is empty"):
        psi(good, [])
    with pytest.raises(ValueError, match="reference must be finite: 1 NaN"):
        ks_two_sample([1.0, np.nan, 2.0], good)
    with pytest.raises(ValueError, match="age: live must be finite"):
        feature_drift({"age": good}, {"age": np.append(good, np.inf)})
    with pytest.raises(ValueError, match=r"non-negative counts: index 1 is -2\.0"):
        js_divergence([3, -2], [1, 1])
    with pytest.raises(ValueError, match="genre: reference counts has no observations"):
        feature_drift({"genre": {"a": 0}}, {"genre": {"a": 3}})
    with pytest.raises(ValueError, match="same length"):
        chi_square_test([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="both be mappings"):
        chi_square_test({"a": 1}, [1])
    with pytest.raises(ValueError, match="same width"):
        embedding_drift(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="2-D"):
        embedding_drift(np.zeros(5), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="user_embedding: embeddings must have the same width"):
        feature_drift({"user_embedding": np.zeros((300, 3))}, {"user_embedding": np.zeros((300, 4))})
    with pytest.raises(ValueError, match=r"only in reference \['age'\], only in live \['sex'\]"):
        feature_drift({"age": good}, {"sex": good})
    with pytest.raises(ValueError, match="kind must be one of"):
        feature_drift({"age": good}, {"age": good}, kinds={"age": "ordinal"})
    with pytest.raises(ValueError, match="n_bins"):
        psi(good, good, n_bins=1)
    with pytest.raises(ValueError, match="ks_pvalue"):
        DriftThresholds(ks_pvalue=0.0)
    with pytest.raises(ValueError, match="threshold must be > 0"):
        DriftThresholds(ph_threshold=-1.0)


def test_feature_result_serialises():
    feature = FeatureDrift("x", "numeric", {"psi": 0.3}, {"psi": 0.2}, True, ("PSI 0.300 > 0.2",), 10, 20)
    assert feature.to_dict()["reasons"] == ["PSI 0.300 > 0.2"]
    assert DriftThresholds().to_dict()["psi"] == 0.2
