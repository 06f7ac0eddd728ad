"""Prometheus exposition: counters, cumulative histograms, label escaping, scrape-time gauges."""

from __future__ import annotations

import re

from workjet_fast import metrics
from workjet_fast.metrics import CONTENT_TYPE, Metrics

LINE = re.compile(r'^[a-z_]+(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? [-+0-9.eInf]+$')


def lines(m: Metrics) -> list[str]:
    return m.render().decode().splitlines()


def samples(m: Metrics) -> dict[str, float]:
    return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in lines(m) if not ln.startswith("#")}


def test_every_line_is_valid_exposition() -> None:
    m = Metrics()
    m.observe_request(200, "gpt", "standard", "fake/mini", 0.3, 0.25, 10, 5)
    m.observe_request(429, "gpt", None, None, 0.001)
    m.dlp_finding("email", "redact", "request", 2)
    m.rate_limited("rpm")
    m.register_circuits(lambda: {"fake/mini": "half_open"})
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")
    for ln in lines(m):
        assert ln.startswith(("# HELP ", "# TYPE ")) or LINE.match(ln), ln


def test_counters() -> None:
    m = Metrics()
    for _ in range(3):
        m.observe_request(200, "gpt", "standard", "fake/mini", 0.3, 0.25, 10, 5)
    m.observe_request(502, "gpt", None, "fake/mini", 1.0, None, None, None)
    m.dlp_finding("email", "redact", "request", 2)
    m.dlp_finding("email", "redact", "request")
    m.rate_limited("tpm")
    s = samples(m)
    assert s['workjet_requests_total{status="200",model="gpt",tier="standard",deployment="fake/mini"}'] == 3
    assert s['workjet_requests_total{status="502",model="gpt",tier="",deployment="fake/mini"}'] == 1
    assert s['workjet_tokens_total{model="gpt",kind="prompt"}'] == 30
    assert s['workjet_tokens_total{model="gpt",kind="completion"}'] == 15
    assert s['workjet_dlp_findings_total{entity="email",action="redact",direction="request"}'] == 3
    assert s['workjet_rate_limited_total{limit="tpm"}'] == 1
    assert s['workjet_upstream_duration_seconds_count{deployment="fake/mini"}'] == 3


def test_histogram_buckets_are_cumulative() -> None:
    m = Metrics(buckets=(0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 5.0):
        m.observe_request(200, "gpt", None, None, v)
    s = samples(m)
    assert s['workjet_request_duration_seconds_bucket{model="gpt",le="0.1"}'] == 2  # le is inclusive
    assert s['workjet_request_duration_seconds_bucket{model="gpt",le="1"}'] == 3
    assert s['workjet_request_duration_seconds_bucket{model="gpt",le="+Inf"}'] == 4
    assert s['workjet_request_duration_seconds_count{model="gpt"}'] == 4
    assert s['workjet_request_duration_seconds_sum{model="gpt"}'] == 5.65


def test_label_values_are_escaped() -> None:
    m = Metrics()
    m.rate_limited('a"b\\c\nd')
    assert 'workjet_rate_limited_total{limit="a\\"b\\\\c\\nd"} 1' in lines(m)


def test_collectors_at_scrape_time() -> None:
    m = Metrics()

    class Audit:
        depth = 3

        def stats(self) -> dict[str, int]:
            return {"queue_depth": self.depth, "queued": 9, "written": 5, "spilled": 1, "dropped": 0, "replayed": 1}

    audit = Audit()
    m.register_audit(audit)
    m.register_circuits(lambda: {"a/x": "open", "b/y": "closed"})

    def broken() -> list[metrics.Sample]:
        raise RuntimeError("a failing collector is skipped")

    m.register_collector(broken)
    s = samples(m)
    assert s["workjet_audit_queue_depth"] == 3 and s["workjet_audit_spilled_total"] == 1
    assert s["workjet_audit_dropped_total"] == 0
    assert s['workjet_circuit_state{deployment="a/x",state="open"}'] == 1
    assert s['workjet_circuit_state{deployment="a/x",state="closed"}'] == 0
    assert s['workjet_circuit_state{deployment="b/y",state="closed"}'] == 1
    audit.depth = 7
    assert samples(m)["workjet_audit_queue_depth"] == 7
    assert sum(ln == "# TYPE workjet_circuit_state gauge" for ln in lines(m)) == 1


def test_module_level_functions_use_the_process_registry() -> None:
    before = samples(metrics.METRICS).get('workjet_rate_limited_total{limit="module-test"}', 0)
    metrics.rate_limited("module-test")
    assert samples(metrics.METRICS)['workjet_rate_limited_total{limit="module-test"}'] == before + 1
    assert metrics.render() == metrics.METRICS.render()
