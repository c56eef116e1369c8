"""The alert rules as text, checked and unit-tested by the real promtool (``check rules``, ``test rules``), and
shown able to fail: rules with a wrong threshold, a wrong bucket, a missing short window or no clamp of the latency
share fail their tests, and the latency SLI of old (the histogram alone, failures not counted) misses the fault
drill."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from ragperf.systems.monitoring import alerting, prometheus
from ragperf.systems.monitoring.alerting import STANDARD_BUCKETS, Sli, latency_buckets, le_regex

pytestmark = pytest.mark.skipif(not Path(prometheus.promtool_binary()).exists(), reason="promtool is not installed")

ENTRY = Sli("entry", "ragperf_nginx_requests_total", "ragperf_nginx_request_duration_seconds", 'endpoint="ask"')
PROBE = Sli("probe", "ragperf_probe_requests_total", "ragperf_probe_request_duration_seconds", 'endpoint="ask"')
LAB = {"p95_s": 5.0, "success_rate_pct": 95.0, "slis": [ENTRY, PROBE], "scale": 1 / 60, "scrape_interval_s": 1}
PROD = {"p95_s": 1.5, "success_rate_pct": 99.0, "slis": [ENTRY, PROBE], "scale": 1.0, "scrape_interval_s": 15}


def _rules(**params) -> dict:
    return yaml.safe_load(alerting.render_rules(**params))


def _all(doc: dict) -> list[dict]:
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_latency_buckets_are_the_standard_ones_plus_the_slo():
    assert latency_buckets(5.0) == STANDARD_BUCKETS
    buckets = latency_buckets(1.2)
    assert 1.2 in buckets and len(buckets) == len(STANDARD_BUCKETS) + 1 and list(buckets) == sorted(buckets)
    with pytest.raises(ValueError, match="p95_s"):
        latency_buckets(0)


@pytest.mark.parametrize(
    "seconds, matches, misses",
    [
        (5.0, ["5", "5.0", "5.00"], ["50", "0.5", "5.5", "+Inf", "15"]),
        (1.5, ["1.5", "1.50"], ["1.55", "15", "1", "11.5"]),
        (0.25, ["0.25"], ["0.025", "0.2", "2.5"]),
    ],
)
def test_le_regex_takes_both_spellings_of_the_bucket_only(seconds, matches, misses):
    pattern = le_regex(seconds)
    assert all(re.fullmatch(pattern, text) for text in matches)  # Prometheus anchors a regex matcher
    assert not any(re.fullmatch(pattern, text) for text in misses)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"success_rate_pct": 100}, "success_rate_pct"),
        ({"success_rate_pct": 0}, "success_rate_pct"),
        ({"scale": 0}, "scale"),
        ({"scale": 1.5}, "scale"),
        ({"scrape_interval_s": 0.1}, "scrape_interval_s"),
        ({"for_s": -1}, "for_s"),
        ({"cache_hit_floor": 1}, "cache_hit_floor"),
        ({"connections_ratio": 0}, "connections_ratio"),
        ({"slis": []}, "slis"),
        ({"slis": [ENTRY, ENTRY]}, "own name"),
        ({"p95_s": "5"}, "p95_s"),
    ],
)
def test_bad_parameters_name_themselves(changes, words):
    with pytest.raises(ValueError, match=words):
        alerting.render_rules(**{**LAB, **changes})


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"name": "Entry"}, "name"),
        ({"requests": "not a metric"}, "requests"),
        ({"duration": "x_seconds_bucket"}, "base name"),
        ({"selector": 'code="200"'}, "rules' own"),
        ({"selector": "endpoint=ask"}, "selector"),
        ({"selector": 'endpoint=~"a.*"'}, "plain words"),
    ],
)
def test_bad_sli_names_the_field(fields, words):
    with pytest.raises(ValueError, match=words):
        Sli(**{"name": "entry", "requests": "r_total", "duration": "d_seconds", **fields})


def test_rules_have_the_records_and_alerts_with_their_labels():
    doc = _rules(**LAB)
    rules = _all(doc)
    records = {(r["record"], r["labels"]["sli"]) for r in rules if "record" in r}
    for window in alerting.WINDOWS:
        for sli in ("entry", "probe"):
            assert (f"ragperf:sli_errors:ratio_rate{window}", sli) in records
            assert (f"ragperf:sli_slow:ratio_rate{window}", sli) in records
    alerts = [r for r in rules if "alert" in r]
    assert {a["alert"] for a in alerts} == {
        "SLOErrorBudgetBurn", "SLOLatencyBudgetBurn", "TargetDown", "ExporterDown", "PostgresConnectionsNearMax",
        "CacheHitRatioCollapsed",
    }  # fmt: skip
    burns = [(a["labels"]["severity"], a["labels"]["burn"], a["labels"]["long_window"], a["labels"]["short_window"],
              a["for"]) for a in alerts if a["alert"] == "SLOErrorBudgetBurn"]  # fmt: skip
    assert burns == [
        ("page", "14.4", "1h", "5m", "5s"),
        ("page", "6", "6h", "30m", "30s"),
        ("ticket", "3", "1d", "2h", "120s"),
    ]
    page = next(a for a in alerts if a["alert"] == "SLOErrorBudgetBurn")
    assert page["expr"] == (
        "ragperf:sli_errors:ratio_rate1h > (14.4 * 0.05) and ragperf:sli_errors:ratio_rate5m > (14.4 * 0.05)"
    )
    assert all(a["annotations"]["summary"] and a["annotations"]["description"] for a in alerts)
    slow = next(
        r for r in rules if r.get("record") == "ragperf:sli_slow:ratio_rate1h" and r["labels"]["sli"] == "entry"
    )
    assert "[60s]" in slow["expr"] and 'le=~"5(\\\\.0*)?"' in slow["expr"]
    total = 'sum(rate(ragperf_nginx_requests_total{endpoint="ask"}[60s]))'
    fast = 'sum(rate(ragperf_nginx_request_duration_seconds_bucket{endpoint="ask", le=~"5(\\\\.0*)?"}[60s]))'
    failed = '(sum(rate(ragperf_nginx_requests_total{endpoint="ask", code!~"2.."}[60s])) or vector(0))'
    assert slow["expr"] == f"clamp_max(({total} - {fast} + {failed}) / {total}, 1)"  # no traffic, no value
    errors = next(r for r in rules if r.get("record") == "ragperf:sli_errors:ratio_rate5m")
    assert 'ragperf_nginx_requests_total{endpoint="ask", code!~"2.."}[5s]' in errors["expr"]
    cache = next(a for a in alerts if a["alert"] == "CacheHitRatioCollapsed")
    assert "[5s]" in cache["expr"] and "< 0.2" in cache["expr"] and "> 0.5" in cache["expr"]


def test_the_file_says_how_failures_count_for_latency():
    text = alerting.render_rules(**LAB)
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    assert "good only when it succeeded (2xx) AND was faster than 5 s" in header
    assert "exact when failures are faster than 5 s, conservative otherwise" in header
    assert 'code "0", is counted twice before the clamp' in header


def test_scaled_windows_are_clamped_and_the_file_says_so():
    text = alerting.render_rules(**{**LAB, "scrape_interval_s": 15})
    assert "# Clamped to 31s" in text and "5m (scaled 5s)" in text and "30m (scaled 30s)" in text
    alerts = [r for r in _all(yaml.safe_load(text)) if "alert" in r]
    assert next(a for a in alerts if a["alert"] == "TargetDown")["for"] == "31s"
    assert "Clamped" not in alerting.render_rules(**PROD)
    fixed = [r for r in _all(_rules(**{**LAB, "for_s": 42})) if "alert" in r]
    assert {a["for"] for a in fixed} == {"42s"}


def test_a_burn_rate_that_cannot_fire_is_left_out_and_said():
    text = alerting.render_rules(**{**LAB, "success_rate_pct": 85.0})
    burns = [r["labels"]["burn"] for r in _all(yaml.safe_load(text)) if r.get("alert") == "SLOErrorBudgetBurn"]
    assert burns == ["6", "3"] and "SLOErrorBudgetBurn: no 14.4x rule" in text


@pytest.mark.parametrize("params", [PROD, LAB], ids=["scale 1", "scale 1/60"])
def test_promtool_checks_and_tests_the_rules(params):
    rules = alerting.render_rules(**params)
    checked = prometheus.check_rules(rules)
    assert checked.ok, checked.output
    tests = alerting.render_rule_tests(**params)
    doc = yaml.safe_load(tests)
    names = {check["alertname"] for group in doc["tests"] for check in group["alert_rule_test"]}
    fired = {check["alertname"] for group in doc["tests"] for check in group["alert_rule_test"] if check["exp_alerts"]}
    alerts = {r["alert"] for r in _all(yaml.safe_load(rules)) if "alert" in r}
    assert names == fired == alerts  # every alert is shown firing, and silent
    drill = next(group for group in doc["tests"] if group["name"].startswith("fault drill"))
    assert all('code="2' in s["series"] or 'code="500"' in s["series"] or s["values"].startswith("0 0+0x")
               for s in drill["input_series"] if "_requests_total" in s["series"])  # fmt: skip
    fast = [s["values"] for s in drill["input_series"] if "_bucket{" in s["series"] and 'le="+Inf"' not in s["series"]]
    counts = [s["values"] for s in drill["input_series"] if s["series"].split("{")[0].endswith("_count")]
    assert fast and sorted(fast) == sorted(counts)  # every request, failed or not, in the fast bucket
    page = drill["alert_rule_test"][:2]
    latency = next(check for check in page if check["alertname"] == "SLOLatencyBudgetBurn")
    assert {(a["exp_labels"]["burn"], a["exp_labels"]["severity"]) for a in latency["exp_alerts"]} == {("14.4", "page")}
    assert {a["exp_labels"]["sli"] for a in latency["exp_alerts"]} == {"entry", "probe"}
    healthy = next(group for group in doc["tests"] if group["name"].startswith("all healthy ("))
    assert not any(check["exp_alerts"] for check in healthy["alert_rule_test"])
    les = {s["series"] for group in doc["tests"] for s in group["input_series"] if "_bucket" in s["series"]}
    spelt = repr(params["p95_s"])
    assert any(f'le="{spelt}"' in s for s in les) and any(f'le="{spelt.removesuffix(".0")}"' in s for s in les)
    result = prometheus.test_rules(rules, tests)
    assert result.ok, result.output


MUTATIONS = {
    "a page threshold ten times lower": ("(14.4 * 0.05)", "(1.44 * 0.05)"),
    "the SLO bucket in one spelling only": ('le=~"5(\\\\.0*)?"', 'le="5.0"'),
    "no short window on the fast page": (" and ragperf:sli_slow:ratio_rate5m > (14.4 * 0.05)", ""),
    "no clamp of the latency share at 1": (", 1)", ", 2)"),
}


def _old_latency_sli(rules: str) -> str:
    """The rules with the latency SLI of old: (histogram _count - SLO bucket) / _count, failures not counted."""
    doc = yaml.safe_load(rules)
    slis = {sli.name: sli for sli in (ENTRY, PROBE)}
    le = le_regex(LAB["p95_s"]).replace("\\", "\\\\")
    for rule in _all(doc):
        if rule.get("record", "").startswith("ragperf:sli_slow:"):
            sli, window = slis[rule["labels"]["sli"]], re.search(r"\[\d+s\]", rule["expr"]).group()
            total = f"sum(rate({sli.duration}_count{sli.select()}{window}))"
            bucket = f'le=~"{le}"'
            fast = f"sum(rate({sli.duration}_bucket{sli.select(bucket)}{window}))"
            rule["expr"] = f"({total} - {fast}) / {total}"
    return yaml.safe_dump(doc, sort_keys=False, width=1_000)


def test_the_latency_sli_of_old_misses_the_fault_drill():
    params = {**LAB, "slis": [PROBE]}
    rules = alerting.render_rules(**params)
    doc = yaml.safe_load(alerting.render_rule_tests(**params))
    doc["tests"] = [group for group in doc["tests"] if group["name"].startswith("fault drill")]
    drill = yaml.safe_dump(doc, sort_keys=False, width=1_000)
    assert len(doc["tests"]) == 1
    assert prometheus.test_rules(rules, drill).ok
    old = _old_latency_sli(rules)
    assert "clamp_max" not in old and "_count" in old and prometheus.check_rules(old).ok
    result = prometheus.test_rules(old, drill)
    assert not result.ok and "FAILED" in result.output
    assert "alertname: SLOLatencyBudgetBurn" in result.output and "alertname: SLOErrorBudgetBurn" not in result.output


def test_the_rule_tests_fail_for_wrong_rules():
    params = {**LAB, "slis": [PROBE]}  # one SLI: quicker, and enough to show each mutation caught
    rules = alerting.render_rules(**params)
    tests = alerting.render_rule_tests(**params)
    assert prometheus.test_rules(rules, tests).ok

    def mutated(change: tuple[str, str]) -> prometheus.PromtoolResult:
        old, new = change
        assert old in rules, old
        return prometheus.test_rules(rules.replace(old, new), tests)

    cache_rule = next(r for r in _all(yaml.safe_load(rules)) if r.get("alert") == "CacheHitRatioCollapsed")
    assert "or vector(0)" in cache_rule["expr"]
    changes = dict(MUTATIONS)  # and the cache alert without its zero for absent hits:
    changes["no zero for absent cache hits"] = (cache_rule["expr"], cache_rule["expr"].replace(" or vector(0)", ""))
    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(changes, pool.map(mutated, changes.values()), strict=True))
    for name, result in results.items():
        assert not result.ok and "FAILED" in result.output, name
