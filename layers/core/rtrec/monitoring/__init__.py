"""Monitoring: the metric catalog (one definition of every metric, dashboard panel and alarm), the typed emit
helpers the handlers call (`Telemetry`), the Grafana dashboard generated from the catalog, and `rtrec report`."""
