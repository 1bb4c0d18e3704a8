"""`rtrec report`: the series it plots, and the page it renders from a real (in-memory) run of the loop."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rtrec.adapters.prometheus import PrometheusMetrics
from rtrec.domain.events import Impression, UserEvent
from rtrec.monitoring.report import (
    ReportInputs,
    bin_width,
    collect,
    drift_rows,
    histogram_quantile,
    hit_points,
    parse_metrics,
    rate_series,
    render,
    share,
    with_gaps,
)
from tests.unit.monitoring_world import LogReader, run_loop

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FEATURES = ("user_age", "item_popularity", "genre_mix")


def drift_reports(count: int = 6, start: float = 1_000_000_000.0) -> list[dict]:
    """Reports in the drift check's format (drift/reports/<timestamp>.json), the last two drifted."""
    reports = []
    for n in range(count):
        drifted = n >= count - 2
        features = [
            {
                "name": name,
                "kind": "numeric",
                "statistic": "psi",
                "value": 0.05 + 0.02 * n + 0.1 * drifted * k,
                "threshold": 0.2,
                "drifted": drifted and k > 0,
            }
            for k, name in enumerate(FEATURES)
        ]
        reports.append(
            {
                "generated_at": start + 3600 * n,
                "drifted": drifted,
                "features": features,
                "reward": {"name": "reward", "statistic": "page_hinkley", "value": 0.0, "threshold": 1.0, "drifted": False},
            }
        )
    return reports


# -- series ------------------------------------------------------------------------------------------------------


def test_bin_width_is_the_smallest_nice_width_within_the_bin_budget():
    assert bin_width([0, 7200]) == 300  # 2 h in 24 bins of 5 min
    assert bin_width([0, 30]) == 1
    assert bin_width([5.0]) == 60


def test_rates_per_bin_and_overall():
    series = rate_series([(0, True), (10, False), (70, True), (75, True)], 60)
    assert list(series.starts) == [0, 60]
    assert list(series.rate) == [0.5, 1.0]
    assert series.overall == 0.75 == share([(0, True), (10, False), (70, True), (75, True)])
    assert math.isnan(share([]))


def test_lines_break_over_empty_bins():
    starts, values = with_gaps(np.array([0.0, 60.0, 300.0]), np.array([0.1, 0.2, 0.3]), 60)
    assert list(starts) == [0, 60, 120, 300]
    assert math.isnan(values[2])
    assert list(values[[0, 1, 3]]) == [0.1, 0.2, 0.3]


def test_the_hit_rate_joins_events_to_the_slates_they_name():
    slate = Impression("r1", "u1", "1", "two_tower", ("a", "b"), (0.5, 0.5), (1.0, 0.9), 100.0)
    events = [
        UserEvent("e1", "u1", "b", "click", 5.0, request_id="r1"),  # in the slate
        UserEvent("e2", "u1", "z", "click", 6.0, request_id="r1"),  # not in it
        UserEvent("e3", "u1", "a", "click", 7.0, request_id="unknown"),  # no such slate: not counted
        UserEvent("e4", "u1", "a", "click", 8.0),
    ]
    assert hit_points([slate], events) == [(100.0, True), (100.0, False)]


def test_histogram_quantiles_interpolate_as_prometheus_does():
    buckets = [(0.01, 50.0), (0.02, 90.0), (0.05, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.015)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.047)
    assert math.isnan(histogram_quantile(0.5, [(0.01, 0.0), (math.inf, 0.0)]))


def test_drift_rows_keep_each_features_value_and_threshold_in_time_order():
    rows = drift_rows(drift_reports(3))
    assert set(rows) == {*FEATURES, "reward"}  # the reward detector's statistic too
    assert [r[1] for r in rows["user_age"]] == pytest.approx([0.05, 0.07, 0.09])
    assert all(r[2] == 0.2 for r in rows["genre_mix"])


# -- the page, from a real run -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, ReportInputs]:
    run = run_loop(PrometheusMetrics(), requests=150)
    inputs = collect(LogReader(run.log), lambda: (drift_reports(), []), api_url="http://testserver", probe=40, http=run.client)
    out = tmp_path_factory.mktemp("report")
    return render(inputs, out), inputs


def test_the_report_reads_the_log_the_metrics_and_the_drift_reports(page):
    _, inputs = page
    assert len(inputs.impressions) == 150
    assert len(inputs.events) == 150
    assert inputs.joined
    assert {i.model_version for i in inputs.impressions} == {"1", "2"}
    assert inputs.server_latency["/recommend/{user_id}"][-1][1] == 151 + 40  # the run's 150, the 422, the probe
    assert len(inputs.probe_ms) == 40
    assert all(ms > 0 for ms in inputs.probe_ms)
    assert len(inputs.drift_reports) == 6
    assert not inputs.notes


def test_the_page_references_real_non_trivial_pngs_made_from_the_data(page):
    index, inputs = page
    text = index.read_text()
    images = re.findall(r'<img src="([^"]+)"', text)
    assert images == ["img/latency.png", "img/rates.png", "img/versions.png", "img/drift.png"]
    for relative in images:
        path = index.parent / relative
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC), relative
        assert len(data) > 15_000, relative
        import matplotlib.image

        pixels = matplotlib.image.imread(path)
        assert pixels.shape[0] > 300, relative
        assert pixels.shape[1] > 600, relative
        assert float(np.std(pixels)) > 0.05, relative
    # The summary states the figures the plots are made of.
    ctr = sum(any(j.rewards) for j in inputs.joined) / len(inputs.joined)
    assert f"{ctr:.4f} over {len(inputs.joined):,} resolved slates" in text
    assert "v1: 75" in text
    assert "v2: 75" in text
    assert "no drift reports yet" not in text
    assert "<td>item_popularity</td><td>numeric</td><td>psi</td><td>0.25</td><td>0.2</td><td>yes</td>" in text


def test_an_empty_system_gives_a_page_that_says_what_is_missing(tmp_path):
    index = render(ReportInputs(notes=["the API at http://127.0.0.1:1 did not answer (ConnectError)"]), tmp_path)
    text = index.read_text()
    assert "no drift reports yet" in text
    assert "no impressions in the counterfactual log yet" in text
    assert "did not answer" in text
    assert "<img" not in text
    assert not list((tmp_path / "img").glob("*.png"))


def test_parse_metrics_reads_the_latency_histogram_per_route():
    sink = PrometheusMetrics(process_metrics=False)
    for ms in (3.0, 4.0, 40.0):
        sink.put("Latency", ms, "Milliseconds", {"Route": "/recommend/{user_id}"})
    sink.put("ConsumerRecords", 7)
    histograms, counters = parse_metrics(sink.exposition()[0].decode())
    buckets = histograms["/recommend/{user_id}"]
    assert buckets[-1] == (math.inf, 3.0)
    assert dict(buckets)[0.005] == 2.0
    assert counters["rtrec_consumer_records_total"] == 7


CHROMIUM = next((shutil.which(b) for b in ("chromium-headless-shell", "chromium", "chromium-browser") if shutil.which(b)), None)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium here (apt-get install chromium; .ci/run installs it)")
def test_a_headless_browser_renders_the_page(page, tmp_path):
    index, _ = page
    shot = tmp_path / "screenshot.png"
    # No background networking, updates, sync or first-run work: the page is a local file, and on a closed network
    # those connection attempts only slow the start down.
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,3200",
            index.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), result.stderr
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (3200, 1200)
    # The plots were loaded and drawn: far more distinct colours than a page of text on white would have.
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 500
