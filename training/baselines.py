"""The matrix-factorisation peer: implicit's ALS, trained on the same split as the two towers.

ALS rather than implicit's BPR: on ML-1M under RecBole's protocol implicit's BPR stays below the
popularity baseline whatever we tried (test Recall@10 0.055-0.12), while ALS, tuned on the
validation part, reaches 0.199 (see tests/bench/RESULTS.md). implicit is a dev/bench dependency,
never a runtime one: without it the peer is skipped.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from training.data import interaction_matrix

# Chosen on the validation part of the ML-1M RecBole split (Recall@10 0.1816) from a small grid
# over factors {32, 64, 128}, regularization {0.01, 0.05, 0.1} and alpha {1, 2, 5, 10}.
ALS_PARAMS = {"factors": 64, "regularization": 0.01, "alpha": 5.0, "iterations": 15}


def mf_peer_scorer(
    train: pd.DataFrame,
    n_users: int,
    n_items: int,
    seed: int,
    progress: Callable[[str], None] = print,
    params: dict | None = None,
) -> Callable[[np.ndarray], np.ndarray] | None:
    """Fit ALS on `train` and return a scorer, or None (with a message) when implicit is missing."""
    try:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits
    except ImportError:
        progress("MF peer skipped: implicit is not installed (pip install -e '.[dev]')")
        return None
    # implicit runs its own threads; a multi-threaded BLAS underneath only oversubscribes the cores
    # (implicit checks this when the model is built, so build it inside the limit too).
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(**{**ALS_PARAMS, **(params or {})}, random_state=seed, num_threads=2)
        model.fit(interaction_matrix([train], n_users, n_items, dtype=np.float32), show_progress=False)
    users, items = np.asarray(model.user_factors), np.asarray(model.item_factors)
    return lambda batch: users[batch] @ items.T
