"""Does the online ranker learn anything? Progressive validation over the joined counterfactual log (issue 5).

The stream consumer joins each served slate with its reward and logs it (`joined/` in the counterfactual-logs
bucket, with each shown item's ranking features). This replays those slates in time order through fresh learners,
each predicting an example before learning from it (progressive validation, as McMahan et al. 2013 evaluate FTRL),
and reports:

- log loss and AUC of the click predictions: a running click-through rate (the baseline every feature must beat),
  FTRL-Proximal over every ranking feature as the consumer learns it (centred within each slate,
  `rtrec.domain.online.slate_centred`) and uncentred (as it did before), over the model's features only (no stream
  signals: ctr_lift, trend), and over relevance alone;
- among the slates that got a reward, how high each ordering puts the chosen item (hit@1 and mean reciprocal rank):
  the learner's prediction at that moment, the logged relevance, and the logged serving score.

Reads the saved state folder of `make run` (`.rtrec/s3/counterfactual-logs/joined/`) or, with `--endpoint-url`,
the running embedded cloud. `--since`/`--until` (unix seconds) pick one replay arm. Nothing asserts; pytest does not
collect this file.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from benchkit import machine

from rtrec.domain.online import RANKER_FEATURES, FtrlProximal, LabeledImpression

MODEL_FEATURES = [i for i, name in enumerate(RANKER_FEATURES) if name not in ("ctr_lift", "trend")]
RELEVANCE_ONLY = [RANKER_FEATURES.index("bias"), RANKER_FEATURES.index("relevance")]


def load_slates(args: argparse.Namespace) -> list[LabeledImpression]:
    slates: dict[str, LabeledImpression] = {}
    if args.endpoint_url:
        from rtrec.adapters.aws.s3 import S3CounterfactualLog
        from rtrec.resources import COUNTERFACTUAL_BUCKET, ResourceNames

        log = S3CounterfactualLog(ResourceNames().bucket(COUNTERFACTUAL_BUCKET), endpoint_url=args.endpoint_url)
        found = log.read_joined()
    else:
        found = []
        for path in sorted((args.state_dir / "s3" / "counterfactual-logs" / "joined").rglob("*.jsonl")):
            found += [LabeledImpression.from_dict(json.loads(line)) for line in path.read_text().splitlines() if line]
    for slate in found:
        slates.setdefault(slate.slate.request_id, slate)
    picked = [
        s
        for s in slates.values()
        if args.since <= s.slate.timestamp <= args.until
        and s.slate.features
        and len(s.slate.features[0]) == len(RANKER_FEATURES)
    ]
    return sorted(picked, key=lambda s: s.slate.timestamp)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney: the chance a random positive scores above a random negative (ties count half)."""
    positives, negatives = scores[labels == 1], scores[labels == 0]
    if not len(positives) or not len(negatives):
        return float("nan")
    order = np.argsort(np.concatenate([positives, negatives]), kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    values = np.concatenate([positives, negatives])
    for value in np.unique(values):  # average ranks of ties
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return float(
        (ranks[: len(positives)].sum() - len(positives) * (len(positives) + 1) / 2) / (len(positives) * len(negatives))
    )


@dataclass
class Arm:
    name: str
    columns: list[int] | None  # None: the running click-through rate
    learner: FtrlProximal | None = None
    centered: bool = False  # features minus their slate mean (all but the bias)
    predictions: list[float] = field(default_factory=list)
    clicks: float = 0.0
    shown: float = 0.0
    hits_at_1: int = 0
    reciprocal_ranks: list[float] = field(default_factory=list)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.columns is None:
            return np.full(len(x), (self.clicks + 1.0) / (self.shown + 100.0))
        assert self.learner is not None
        return self.learner.predict(self._x(x))

    def learn(self, x: np.ndarray, y: np.ndarray) -> None:
        self.clicks += float(y.sum())
        self.shown += len(y)
        if self.learner is not None:
            self.learner.update(self._x(x), y)

    def _x(self, x: np.ndarray) -> np.ndarray:
        x = x[:, self.columns]
        if self.centered:
            x = x - x.mean(axis=0)
            x[:, 0] = 1.0
        return x


def rank_of_chosen(scores: np.ndarray, rewards: np.ndarray) -> int:
    chosen = int(np.argmax(rewards))
    return 1 + int((scores > scores[chosen]).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", type=Path, default=Path(".rtrec"))
    parser.add_argument("--endpoint-url", default=None, help="read the running embedded cloud instead")
    parser.add_argument("--since", type=float, default=0.0)
    parser.add_argument("--until", type=float, default=math.inf)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--l1", type=float, default=0.01)
    parser.add_argument("--l2", type=float, default=1.0)
    args = parser.parse_args()

    print(f"# Online ranker, progressive validation over the joined log\n\n{machine()}\n", flush=True)
    slates = load_slates(args)
    if not slates:
        raise SystemExit("no joined slates with ranking features in that window; run `make run` and `rtrec replay` first")
    rewarded = sum(1 for s in slates if any(s.rewards))
    first, last = slates[0].slate.timestamp, slates[-1].slate.timestamp
    print(
        f"{len(slates):,} slates ({rewarded:,} with a reward) served {time.strftime('%H:%M:%S', time.gmtime(first))}"
        f"-{time.strftime('%H:%M:%S', time.gmtime(last))} UTC; {sum(len(s.slate.items) for s in slates):,} examples\n"
    )

    def ftrl(columns: list[int]) -> FtrlProximal:
        return FtrlProximal(len(columns), alpha=args.alpha, l1=args.l1, l2=args.l2)

    arms = [
        Arm("running click-through rate", None),
        Arm("FTRL, all 7 features, uncentred (the consumer before the fix)", list(range(7)), ftrl(list(range(7)))),
        Arm("FTRL, all 7 features, slate-centred (the consumer's)", list(range(7)), ftrl(list(range(7))), centered=True),
        Arm(
            "FTRL, model features only (no ctr_lift, trend), slate-centred", MODEL_FEATURES, ftrl(MODEL_FEATURES), centered=True
        ),
        Arm("FTRL, bias + relevance, slate-centred", RELEVANCE_ONLY, ftrl(RELEVANCE_ONLY), centered=True),
    ]
    labels: list[float] = []
    by_relevance = {"hits": 0, "rr": []}
    by_score = {"hits": 0, "rr": []}
    for labeled in slates:
        x = np.asarray(labeled.slate.features, dtype=np.float64)
        y = np.asarray(labeled.rewards, dtype=np.float64)
        labels.extend(y.tolist())
        for arm in arms:
            p = arm.predict(x)
            arm.predictions.extend(p.tolist())
            if y.any():
                rank = rank_of_chosen(p + 1e-12 * np.arange(len(p))[::-1], y)  # ties: the earlier slot first
                arm.hits_at_1 += rank == 1
                arm.reciprocal_ranks.append(1.0 / rank)
            arm.learn(x, y)
        if y.any():
            for store, scores in ((by_relevance, x[:, 1]), (by_score, np.asarray(labeled.slate.scores))):
                rank = rank_of_chosen(scores, y)
                store["hits"] += rank == 1
                store["rr"].append(1.0 / rank)
    y_all = np.asarray(labels)
    print("| predictor | log loss | AUC | hit@1 among rewarded slates | MRR |")
    print("|---|---:|---:|---:|---:|")
    for arm in arms:
        p = np.clip(np.asarray(arm.predictions), 1e-15, 1 - 1e-15)
        loss = float(-np.mean(y_all * np.log(p) + (1 - y_all) * np.log(1 - p)))
        print(
            f"| {arm.name} | {loss:.4f} | {auc(p, y_all):.3f} | {arm.hits_at_1 / max(rewarded, 1):.3f} | "
            f"{np.mean(arm.reciprocal_ranks) if arm.reciprocal_ranks else float('nan'):.3f} |"
        )
    for name, store in (("logged relevance (the two-tower score)", by_relevance), ("logged serving score", by_score)):
        print(
            f"| ordering by {name} | | | {store['hits'] / max(rewarded, 1):.3f} | "
            f"{np.mean(store['rr']) if store['rr'] else float('nan'):.3f} |"
        )
    weights = arms[2].learner.weights if arms[2].learner is not None else []
    print(
        "\nFinal weights of the consumer's learner (all 7, slate-centred): "
        + ", ".join(f"{name} {w:+.3f}" for name, w in zip(RANKER_FEATURES, weights))
    )
    print(f"Slot-1 chance (1 / slate length) for hit@1: {np.mean([1 / len(s.slate.items) for s in slates]):.3f}")


if __name__ == "__main__":
    main()
