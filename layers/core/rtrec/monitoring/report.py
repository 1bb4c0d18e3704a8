"""`rtrec report`: a static HTML page with plots of what the system did, that a person opens in a browser.

Data sources (all real, none simulated):
- the counterfactual log (S3): served slates (`impressions/`: time, model version, strategy), the events that name a
  slate (`events/`: the online hit rate, i.e. whether the event's item was in the slate the user was shown, the
  prequential HR@k of `rtrec replay`), and the slates joined with their rewards (`joined/`: the stream's CTR);
- the running API's `GET /metrics` (Prometheus): the server-side latency histogram per route since the API started,
  and its counters; optionally `probe` timed `GET /recommend` calls made from here (client-side latency);
- the drift check's reports (`drift/reports/*.json` in the models bucket): each feature's statistic against its
  threshold over time.

`collect` gathers them through ports and HTTP; `render` writes `index.html` and one PNG per plot into a folder
(matplotlib, Agg backend). The series are computed by small pure functions, tested on their own.
"""

from __future__ import annotations

import html
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rtrec.domain.events import Impression, StreamMessage, UserEvent
from rtrec.domain.online import LabeledImpression

LATENCY_METRIC = "rtrec_request_latency_seconds"
_NICE_WIDTHS_S = (1, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)


class LogReader(Protocol):
    """What the report reads of the counterfactual log (S3CounterfactualLog)."""

    def read(self, kind: str) -> list[StreamMessage]: ...

    def read_joined(self) -> list[LabeledImpression]: ...


@dataclass
class ReportInputs:
    impressions: list[Impression] = field(default_factory=list)
    events: list[UserEvent] = field(default_factory=list)
    joined: list[LabeledImpression] = field(default_factory=list)
    drift_reports: list[dict[str, Any]] = field(default_factory=list)
    # route -> [(upper bound in seconds, cumulative count)], from the API's /metrics
    server_latency: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)  # flat samples of the API's /metrics
    probe_ms: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    generated_at: float = field(default_factory=time.time)


# -- collecting --------------------------------------------------------------------------------------------------


def parse_metrics(text: str) -> tuple[dict[str, list[tuple[float, float]]], dict[str, float]]:
    """The latency histogram per route and every other sample (name{labels} -> value) of a /metrics page."""
    from prometheus_client.parser import text_string_to_metric_families

    histograms: dict[str, list[tuple[float, float]]] = {}
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if family.name == LATENCY_METRIC and sample.name.endswith("_bucket"):
                route = sample.labels.get("route", "?")
                histograms.setdefault(route, []).append((float(sample.labels["le"]), float(sample.value)))
            else:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
    return {route: sorted(buckets) for route, buckets in histograms.items()}, samples


def collect(
    log: LogReader | None,
    drift_reports: Callable[[], tuple[list[dict[str, Any]], list[str]]] | None,
    *,
    api_url: str | None,
    probe: int = 0,
    timeout_s: float = 10.0,
    seed: int = 0,
    http: Any = None,
    api_key: str | None = None,
) -> ReportInputs:
    """Gather the report's data. A source that cannot be read becomes a note on the page, not a failure, so a
    report can always be made of what there is. `http`: an httpx.Client to reach the API with (default: a new one,
    sending `api_key` as X-Api-Key)."""
    inputs = ReportInputs()
    if log is not None:
        inputs.impressions = sorted(
            (m for m in log.read("impressions") if isinstance(m, Impression)), key=lambda m: m.timestamp
        )
        inputs.events = [m for m in log.read("events") if isinstance(m, UserEvent)]
        inputs.joined = log.read_joined()
        inputs.sources["log"] = (
            f"{len(inputs.impressions):,} impressions, {len(inputs.events):,} events, {len(inputs.joined):,} joined slates"
        )
    if drift_reports is not None:
        reports, skipped = drift_reports()
        inputs.drift_reports = sorted(reports, key=lambda r: float(r.get("generated_at") or 0))
        inputs.sources["drift"] = f"{len(reports)} drift reports"
        if skipped:
            inputs.notes.append(
                f"{len(skipped)} drift report(s) were not JSON objects and were skipped: {', '.join(skipped[:3])}"
            )
    if api_url:
        import httpx

        if http is not None:
            _collect_api(inputs, http, api_url, probe, seed)
        else:
            with httpx.Client(
                base_url=api_url, timeout=timeout_s, headers={"X-Api-Key": api_key} if api_key else None
            ) as client:
                _collect_api(inputs, client, api_url, probe, seed)
    return inputs


def _collect_api(inputs: ReportInputs, client: Any, api_url: str, probe: int, seed: int) -> None:
    """The probe first (so the server-side histogram holds its requests too), then one scrape of /metrics."""
    import httpx

    if probe > 0:
        users = sorted({i.user_id for i in inputs.impressions}) or [str(u) for u in range(1, 101)]
        rng = random.Random(seed)
        for _ in range(probe):
            started = time.perf_counter()
            try:
                answer = client.get(f"/recommend/{rng.choice(users)}")
            except httpx.HTTPError as exc:
                inputs.notes.append(f"the latency probe stopped: {type(exc).__name__}: {exc}")
                break
            elapsed = (time.perf_counter() - started) * 1000.0
            if answer.status_code == 200:
                inputs.probe_ms.append(elapsed)
        inputs.sources["probe"] = f"{len(inputs.probe_ms)} of {probe} GET /recommend calls from this process"
    try:
        response = client.get("/metrics")
    except httpx.HTTPError as exc:
        inputs.notes.append(f"the API at {api_url} did not answer ({type(exc).__name__}): no server-side latency")
        return
    if response.status_code == 200:
        inputs.server_latency, inputs.counters = parse_metrics(response.text)
        inputs.sources["metrics"] = f"{api_url}/metrics"
    else:
        inputs.notes.append(
            f"{api_url}/metrics answered {response.status_code} (an API started before /metrics "
            "existed?): no server-side latency"
        )


# -- series (pure) -----------------------------------------------------------------------------------------------


def bin_width(timestamps: Sequence[float], max_bins: int = 40) -> float:
    """The smallest 'nice' width (1 s .. 1 week) that puts the span of `timestamps` into at most `max_bins` bins."""
    if len(timestamps) < 2:
        return 60.0
    span = max(timestamps) - min(timestamps)
    for width in _NICE_WIDTHS_S:
        if span / width <= max_bins:
            return float(width)
    return float(math.ceil(span / max_bins))


@dataclass(frozen=True)
class RateSeries:
    """A rate per time bin: bin start (unix s), successes, trials (bins without trials are left out)."""

    starts: np.ndarray
    hits: np.ndarray
    trials: np.ndarray

    @property
    def rate(self) -> np.ndarray:
        rates: np.ndarray = self.hits / np.maximum(self.trials, 1)
        return rates

    @property
    def overall(self) -> float:
        total = float(self.trials.sum())
        return float(self.hits.sum()) / total if total else math.nan


def share(points: Sequence[tuple[float, bool]]) -> float:
    """The share of points that are hits (NaN without points)."""
    return sum(hit for _, hit in points) / len(points) if points else math.nan


def rate_series(points: Iterable[tuple[float, bool]], width: float) -> RateSeries:
    bins: dict[float, list[int]] = {}
    for t, hit in points:
        cell = bins.setdefault(math.floor(t / width) * width, [0, 0])
        cell[0] += int(hit)
        cell[1] += 1
    starts = sorted(bins)
    return RateSeries(
        np.array(starts, dtype=float),
        np.array([bins[s][0] for s in starts], dtype=float),
        np.array([bins[s][1] for s in starts], dtype=float),
    )


def with_gaps(starts: np.ndarray, values: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """The series with a NaN in each run of empty bins, so a line breaks there instead of bridging the gap."""
    if len(starts) < 2:
        return starts, values
    out_starts, out_values = [starts[0]], [values[0]]
    for start, value, previous in zip(starts[1:], values[1:], starts[:-1]):
        if start - previous > width * 1.5:
            out_starts.append(previous + width)
            out_values.append(np.nan)
        out_starts.append(start)
        out_values.append(value)
    return np.array(out_starts, dtype=float), np.array(out_values, dtype=float)


def ctr_points(joined: Iterable[LabeledImpression]) -> list[tuple[float, bool]]:
    """(served at, rewarded) per joined slate: the stream's click-through rate."""
    return [(j.slate.timestamp, any(j.rewards)) for j in joined]


def hit_points(impressions: Iterable[Impression], events: Iterable[UserEvent]) -> list[tuple[float, bool]]:
    """(served at, the event's item was in the slate) per event that names a known slate: the online hit rate."""
    slates = {i.request_id: i for i in impressions}
    points = []
    for event in events:
        slate = slates.get(event.request_id) if event.request_id else None
        if slate is not None:
            points.append((slate.timestamp, event.item_id in slate.items))
    return points


def version_label(version: str | None) -> str:
    return "none (popular items)" if version is None else f"v{version}"


def strategy_mix(impressions: Sequence[Impression], width: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Slates per strategy per bin (bin starts, strategy -> counts)."""
    if not impressions:
        return np.array([]), {}
    starts = sorted({math.floor(i.timestamp / width) * width for i in impressions})
    index = {s: n for n, s in enumerate(starts)}
    counts: dict[str, np.ndarray] = {}
    for i in impressions:
        counts.setdefault(i.strategy, np.zeros(len(starts)))[index[math.floor(i.timestamp / width) * width]] += 1
    return np.array(starts, dtype=float), dict(sorted(counts.items()))


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile: linear interpolation within the bucket that holds the q-quantile (seconds)."""
    finite = [(le, c) for le, c in buckets if math.isfinite(le)]
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for le, cumulative in finite:
        if cumulative >= rank:
            inside = cumulative - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = le, cumulative
    return finite[-1][0] if finite else math.nan


def drift_rows(reports: Sequence[dict[str, Any]]) -> dict[str, list[tuple[float, float, float, bool]]]:
    """Per feature: (generated_at, value, threshold, drifted) over the reports, oldest first."""
    rows: dict[str, list[tuple[float, float, float, bool]]] = {}
    for report in reports:
        at = float(report.get("generated_at") or 0)
        reward = report.get("reward")
        rewards = [{**reward, "name": "reward"}] if isinstance(reward, dict) else []
        for feature in [*(report.get("features") or ()), *rewards]:
            value, threshold = feature.get("value"), feature.get("threshold")
            if isinstance(value, int | float) and isinstance(threshold, int | float) and math.isfinite(value):
                rows.setdefault(str(feature.get("name")), []).append(
                    (at, float(value), float(threshold), bool(feature.get("drifted")))
                )
    return rows


# -- rendering ---------------------------------------------------------------------------------------------------


@dataclass
class Figure:
    key: str
    title: str
    caption: str
    image: str | None = None  # relative path of the PNG, None when there was nothing to plot
    empty: str = ""  # why there is no image


def render(inputs: ReportInputs, out_dir: Path) -> Path:
    """Write `index.html` and its PNGs (under `img/`) into `out_dir`; returns the page's path."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    images = out_dir / "img"
    images.mkdir(exist_ok=True)
    for old in images.glob("*.png"):
        old.unlink()
    figures = [
        _latency_figure(inputs, images),
        _rates_figure(inputs, images),
        _versions_figure(inputs, images),
        _drift_figure(inputs, images),
    ]
    page = out_dir / "index.html"
    page.write_text(_html(inputs, figures))
    return page


def _save(fig: Any, images: Path, key: str) -> str:
    path = images / f"{key}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f"img/{path.name}"


def _time_axis(ax: Any) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("UTC")


def _dates(seconds: Iterable[float]) -> list[Any]:
    from datetime import UTC, datetime

    return [datetime.fromtimestamp(s, UTC) for s in seconds]


def _latency_figure(inputs: ReportInputs, images: Path) -> Figure:
    import matplotlib.pyplot as plt

    figure = Figure(
        "latency",
        "Request latency",
        "Server-side: the API's latency histogram per route since it started (GET /metrics; bars are "
        "the histogram's buckets, quantiles interpolated as Prometheus does). Client-side: timed "
        "GET /recommend calls made by the report itself (--probe N), HTTP included.",
    )
    routes = {r: b for r, b in inputs.server_latency.items() if b and b[-1][1] > 0}
    panels = len(routes) + (1 if inputs.probe_ms else 0)
    if panels == 0:
        figure.empty = "no latency recorded yet: the API answered no request since it started, or was not reachable"
        return figure
    fig, axes = plt.subplots(panels, 1, figsize=(9, 3.2 * panels), squeeze=False)
    for ax, (route, buckets) in zip(axes[:, 0], sorted(routes.items())):
        bounds = [le for le, _ in buckets]
        cumulative = [c for _, c in buckets]
        counts = np.diff([0.0, *cumulative])
        labels = [f"≤{le * 1000:g}" if math.isfinite(le) else f">{bounds[-2] * 1000:g}" for le in bounds]
        ax.bar(range(len(counts)), counts, color="#4c72b0")
        ax.set_xticks(range(len(counts)), labels, rotation=45, fontsize=8)
        quantiles = {q: histogram_quantile(q, buckets) * 1000 for q in (0.5, 0.9, 0.99)}
        ax.set_title(
            f"server-side {route}: {int(cumulative[-1]):,} requests; p50 {quantiles[0.5]:.1f} ms, "
            f"p90 {quantiles[0.9]:.1f} ms, p99 {quantiles[0.99]:.1f} ms",
            fontsize=10,
        )
        ax.set_xlabel("latency bucket (ms)")
        ax.set_ylabel("requests")
    if inputs.probe_ms:
        ax = axes[-1, 0]
        sample = np.array(inputs.probe_ms)
        ax.hist(sample, bins=min(40, max(5, len(sample) // 5)), color="#55a868")
        for q, style in ((50, "-"), (90, "--"), (99, ":")):
            value = float(np.percentile(sample, q))
            ax.axvline(value, color="black", linestyle=style, label=f"p{q} {value:.1f} ms")
        ax.legend(fontsize=8)
        ax.set_title(f"client-side GET /recommend: {len(sample)} calls", fontsize=10)
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("calls")
    fig.tight_layout()
    figure.image = _save(fig, images, figure.key)
    return figure


def _rates_figure(inputs: ReportInputs, images: Path) -> Figure:
    import matplotlib.pyplot as plt

    figure = Figure(
        "rates",
        "CTR and online hit rate over time",
        "CTR: share of the stream's resolved slates that a positive event chose one item of (joined log). "
        "Online hit rate: share of events naming a slate whose item was in that slate (the events and "
        "impressions logs; `rtrec replay` measures its HR@10 so). Bins by the time the slate was served; "
        "bars: slates per bin.",
    )
    ctr, hits = ctr_points(inputs.joined), hit_points(inputs.impressions, inputs.events)
    if not ctr and not hits:
        figure.empty = "no resolved slates and no events naming a slate in the counterfactual log yet"
        return figure
    width = bin_width([t for t, _ in (*ctr, *hits)])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for points, label, color in ((ctr, "CTR (joined slates)", "#c44e52"), (hits, "online hit rate", "#4c72b0")):
        if points:
            series = rate_series(points, width)
            starts, rates = with_gaps(series.starts, series.rate, width)
            top.plot(
                _dates(starts + width / 2),
                rates,
                marker="o",
                markersize=3,
                color=color,
                label=f"{label}: {series.overall:.3f} overall",
            )
            bottom.bar(_dates(series.starts + width / 2), series.trials, width=width / 86400 * 0.8, alpha=0.5, color=color)
    top.set_ylabel("rate")
    top.set_ylim(bottom=0)
    top.legend(fontsize=8)
    top.set_title(f"per {_duration(width)}", fontsize=10)
    bottom.set_ylabel("slates")
    _time_axis(bottom)
    fig.tight_layout()
    figure.image = _save(fig, images, figure.key)
    return figure


def _versions_figure(inputs: ReportInputs, images: Path) -> Figure:
    import matplotlib.pyplot as plt

    figure = Figure(
        "versions",
        "Model versions and strategy mix along time",
        "Every served slate (impressions log): the production model version that served it (and the "
        "shadow candidate scored beside it), and the slates per strategy per bin.",
    )
    served = inputs.impressions
    if not served:
        figure.empty = "no impressions in the counterfactual log yet"
        return figure
    width = bin_width([i.timestamp for i in served])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    labels = sorted(
        {version_label(i.model_version) for i in served} | {f"shadow v{i.shadow_version}" for i in served if i.shadow_version},
        key=lambda s: (s.startswith("shadow"), len(s), s),
    )
    level = {label: n for n, label in enumerate(labels)}
    top.scatter(
        _dates(i.timestamp for i in served),
        [level[version_label(i.model_version)] for i in served],
        s=6,
        color="#4c72b0",
        label="serving",
    )
    shadowed = [i for i in served if i.shadow_version]
    if shadowed:
        top.scatter(
            _dates(i.timestamp for i in shadowed),
            [level[f"shadow v{i.shadow_version}"] for i in shadowed],
            s=6,
            color="#dd8452",
            label="shadow candidate",
        )
        top.legend(fontsize=8)
    top.set_yticks(range(len(labels)), labels)
    versions = sorted(Counter(version_label(i.model_version) for i in served))
    top.set_title(f"{len(served):,} slates; versions served: {', '.join(versions)}", fontsize=10)
    starts, mix = strategy_mix(served, width)
    stacked = np.zeros(len(starts))
    for strategy, counts in mix.items():
        bottom.bar(_dates(starts + width / 2), counts, width=width / 86400 * 0.9, bottom=stacked, label=strategy)
        stacked = stacked + counts
    bottom.legend(fontsize=8, loc="upper left")
    bottom.set_ylabel(f"slates per {_duration(width)}")
    _time_axis(bottom)
    fig.tight_layout()
    figure.image = _save(fig, images, figure.key)
    return figure


def _drift_figure(inputs: ReportInputs, images: Path) -> Figure:
    import matplotlib.pyplot as plt

    figure = Figure(
        "drift",
        "Drift scores",
        "Each feature's drift statistic divided by its threshold, per drift check (drift/reports/*.json "
        "in the models bucket): at or above 1 the feature drifted (red).",
    )
    rows = drift_rows(inputs.drift_reports)
    if not rows:
        figure.empty = "no drift reports yet"
        return figure
    fig, ax = plt.subplots(figsize=(9, 4))
    for name, points in sorted(rows.items()):
        ratios = [v / t if t else math.nan for _, v, t, _ in points]
        ax.plot(_dates(p[0] for p in points), ratios, marker="o", markersize=3, linewidth=1.2, label=name)
        drifted = [(p[0], r) for p, r in zip(points, ratios) if p[3]]
        if drifted:
            ax.scatter(_dates(t for t, _ in drifted), [r for _, r in drifted], color="red", zorder=3, s=25)
    ax.axhline(1.0, color="red", linestyle="--", linewidth=1)
    ax.set_ylabel("statistic / threshold")
    ax.set_title(
        f"{len(inputs.drift_reports)} drift reports, {len(rows)} features; "
        f"{sum(bool(r.get('drifted')) for r in inputs.drift_reports)} found drift",
        fontsize=10,
    )
    ax.legend(fontsize=7, ncol=2)
    _time_axis(ax)
    fig.tight_layout()
    figure.image = _save(fig, images, figure.key)
    return figure


def _duration(seconds: float) -> str:
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def summary(inputs: ReportInputs) -> list[tuple[str, str]]:
    """The numbers at the top of the page."""
    rows: list[tuple[str, str]] = []
    if inputs.impressions:
        first, last = inputs.impressions[0].timestamp, inputs.impressions[-1].timestamp
        rows.append(
            (
                "slates served (impressions log)",
                f"{len(inputs.impressions):,}, "
                f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(first))} to "
                f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(last))} UTC",
            )
        )
        versions = Counter(version_label(i.model_version) for i in inputs.impressions)
        rows.append(("model versions served", ", ".join(f"{v}: {n:,}" for v, n in sorted(versions.items()))))
        cold = sum(i.strategy in ("popular_fallback", "cold_user_features") for i in inputs.impressions)
        rows.append(("cold-start strategies", f"{cold / len(inputs.impressions):.1%} of slates"))
    if inputs.joined:
        rows.append(("stream CTR", f"{share(ctr_points(inputs.joined)):.4f} over {len(inputs.joined):,} resolved slates"))
    hits = hit_points(inputs.impressions, inputs.events)
    if hits:
        rows.append(("online hit rate", f"{share(hits):.4f} over {len(hits):,} events naming a slate"))
    for route, buckets in sorted(inputs.server_latency.items()):
        if buckets and buckets[-1][1] > 0:
            p = [histogram_quantile(q, buckets) * 1000 for q in (0.5, 0.9, 0.99)]
            rows.append(
                (
                    f"server latency {route}",
                    f"p50 {p[0]:.1f} ms, p90 {p[1]:.1f} ms, p99 {p[2]:.1f} ms ({int(buckets[-1][1]):,} requests)",
                )
            )
    if inputs.probe_ms:
        q = np.percentile(inputs.probe_ms, [50, 90, 99])
        rows.append(
            (
                "client latency GET /recommend",
                f"p50 {q[0]:.1f} ms, p90 {q[1]:.1f} ms, p99 {q[2]:.1f} ms ({len(inputs.probe_ms)} calls)",
            )
        )
    for label, name in (
        ("consumer records", "rtrec_consumer_records_total"),
        ("dead-lettered records", "rtrec_consumer_dead_lettered_total"),
        ("online ranker examples", "rtrec_online_ranker_examples_total"),
    ):
        if inputs.counters.get(name):  # zero also when the consumer runs in another process than the API
            rows.append((f"{label} (since the API started)", f"{inputs.counters[name]:,.0f}"))
    if inputs.drift_reports:
        latest = inputs.drift_reports[-1]
        rows.append(
            (
                "latest drift check",
                f"{'DRIFTED' if latest.get('drifted') else 'no drift'} at "
                f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(float(latest.get('generated_at') or 0)))} UTC",
            )
        )
    return rows


_CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left;font-size:14px}
figure{margin:2em 0}img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:13px}
.empty{padding:2em;background:#f6f6f6;color:#666}.note{color:#a33}"""


def _latest_drift_table(report: dict[str, Any]) -> str:
    e = html.escape
    at = time.strftime("%Y-%m-%d %H:%M", time.gmtime(float(report.get("generated_at") or 0)))
    rows = [
        f"<h3>Latest drift check ({e(at)} UTC{', ' + e(str(report['_key'])) if report.get('_key') else ''})</h3>",
        "<table><tr><th>feature</th><th>kind</th><th>statistic</th><th>value</th><th>threshold</th><th>drifted</th></tr>",
    ]
    reward = report.get("reward")
    for f in [*(report.get("features") or ()), *([{**reward, "name": "reward"}] if isinstance(reward, dict) else [])]:
        value, threshold = f.get("value"), f.get("threshold")
        cells = [
            str(f.get("name", "")),
            str(f.get("kind", "")),
            str(f.get("statistic", "")),
            f"{value:.4g}" if isinstance(value, int | float) else "",
            f"{threshold:.4g}" if isinstance(threshold, int | float) else "",
            "yes" if f.get("drifted") else "no",
        ]
        rows.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _html(inputs: ReportInputs, figures: Sequence[Figure]) -> str:
    e = html.escape
    generated = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(inputs.generated_at))
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8"><title>rtrec report</title>',
        f"<style>{_CSS}</style></head><body>",
        "<h1>rtrec report</h1>",
        f"<p>Generated {e(generated)} UTC.</p>",
        "<h2>Summary</h2><table>",
    ]
    rows = summary(inputs) or [("data", "nothing logged yet")]
    parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows]
    parts.append("</table>")
    if inputs.sources:
        parts.append("<p>Sources: " + "; ".join(f"{e(k)}: {e(v)}" for k, v in sorted(inputs.sources.items())) + "</p>")
    parts += [f'<p class="note">{e(note)}</p>' for note in inputs.notes]
    for figure in figures:
        parts.append(f'<figure id="{figure.key}"><h2>{e(figure.title)}</h2>')
        if figure.image:
            parts.append(f'<img src="{e(figure.image)}" alt="{e(figure.title)}">')
        else:
            parts.append(f'<div class="empty">{e(figure.empty)}</div>')
        parts.append(f"<figcaption>{e(figure.caption)}</figcaption></figure>")
    if inputs.drift_reports:
        parts.append(_latest_drift_table(inputs.drift_reports[-1]))
    parts.append("</body></html>")
    return "\n".join(parts)
