"""The quality table a training run prints: both protocols, the baselines, RecBole's published figures."""

from __future__ import annotations

from collections.abc import Mapping

# RecBole's published ml-1m figures (Recall@10, NDCG@10) under the same protocol.
PUBLISHED_ML1M = {"Pop": (0.0699, 0.1006), "BPR": (0.1725, 0.2407), "LightGCN": (0.1823, 0.2476), "EASE": (0.2139, 0.2865)}
COLUMNS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "hit@10", "coverage@10")
MODELS = (
    ("two-tower", ""),
    ("popularity (same split)", "pop."),
    ("ALS, implicit (same split)", "als."),
    ("item-to-item: EASE pruned to top-k (same split)", "i2i."),
    ("EASE, dense (same split)", "i2i.ease."),
)


def quality_table(metrics: Mapping[str, float], dataset: str) -> str:
    """A Markdown table of test figures per protocol and model."""
    header = "| protocol | model | " + " | ".join(COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for protocol in ("recbole", "temporal"):
        for label, prefix in MODELS:
            key = f"{protocol}.{prefix}test."
            if f"{key}recall@10" in metrics:
                lines.append(f"| {protocol} | {label} | " + " | ".join(f"{metrics[key + c]:.4f}" for c in COLUMNS) + " |")
    if dataset == "ml-1m":
        for name, (recall, ndcg) in PUBLISHED_ML1M.items():
            lines.append(f"| recbole | {name} (RecBole, published) | {recall:.4f} | {ndcg:.4f} |" + " |" * 4)
    return "\n".join(lines)
