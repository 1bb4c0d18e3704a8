"""The Open Bandit Dataset loader: the prior file's format, and the sample itself when its wheel is cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rtrec.data.movielens import WheelCache
from rtrec.data.obd import DEFAULT_CACHE_DIR, load_bts_prior, load_open_bandit, parse_prior_yaml
from rtrec.errors import DataUnavailableError


def test_the_prior_file_is_read_per_campaign_and_parameter():
    priors = parse_prior_yaml(
        "# zozotown prior\nall:\n  alpha:\n    - 47.0\n    - 8.0\n  beta:\n    - 12000.0\n"
        "    - 1100.0\nmen:\n  alpha:\n    - 1.0\n  beta:\n    - 2.0\n"
    )
    assert priors["all"]["alpha"].tolist() == [47.0, 8.0]
    assert priors["all"]["beta"].tolist() == [12000.0, 1100.0]
    assert priors["men"]["beta"].tolist() == [2.0]


def test_a_line_out_of_shape_is_a_clear_error():
    with pytest.raises(DataUnavailableError, match="line 2"):
        parse_prior_yaml("all:\nalpha = 3\n")


def test_without_the_wheel_and_downloads_off_it_says_how_to_fetch_it(tmp_path: Path):
    with pytest.raises(DataUnavailableError, match="rtrec data fetch"):
        load_open_bandit("random", "all", tmp_path, allow_download=False)


def _cached() -> bool:
    from rtrec.data.obd import OBP_SOURCE

    return WheelCache(DEFAULT_CACHE_DIR, allow_download=False).cached(OBP_SOURCE) is not None


@pytest.mark.skipif(not _cached(), reason="the obp wheel is not cached: `rtrec data fetch -d obd`")
def test_the_random_logs_of_campaign_all_match_the_published_sample():
    logs = load_open_bandit("random", "all", allow_download=False)
    assert logs.n_rounds == 10_000
    assert logs.n_actions == 80
    assert logs.len_list == 3
    assert np.allclose(logs.pscore, 1 / 80)  # uniform random over 80 items
    assert set(np.unique(logs.position).tolist()) == {0, 1, 2}
    assert set(np.unique(logs.reward).tolist()) <= {0, 1}
    prior = load_bts_prior("all", allow_download=False)
    assert prior.alpha.shape == prior.beta.shape == (80,)
