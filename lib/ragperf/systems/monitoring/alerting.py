"""The alert and recording rules of our Prometheus (Phase 3), as text, and the promtool unit tests that prove them.

Pure: nothing here starts a process or reads a file. :func:`render_rules` writes a rules file in the SRE
Workbook's multiwindow, multi-burn-rate form ("Alerting on SLOs", chapter 5) for two SLOs of each
:class:`Sli`:

* availability: ``success_rate_pct`` % of requests succeed (HTTP 2xx; code "0" is a request that got no
  response: a timeout or a refused connection), so the error budget is ``1 - success_rate_pct / 100``;
* latency: 95 % of requests are answered successfully within ``p95_s``, so the budget is 0.05 of requests
  that failed or were slower than that. A failed request is bad for this SLI too: when the LLM behind the app
  stops, requests fail fast, and a latency SLI of the histogram alone stays at 0 while nearly all fail. A fast
  request is one inside the histogram's ``le`` bucket of ``p95_s`` (every exporter of ours therefore uses
  :func:`latency_buckets`: :data:`STANDARD_BUCKETS` plus ``p95_s``). The histograms have no ``code`` label, so
  the bad share is ``(requests - fast + failed) / requests``, at most 1: exact when the failures are faster than
  ``p95_s``, conservative otherwise (a slow failure, such as a request that got no response, code "0", is
  counted twice before the clamp).

An alert fires when the budget burns ``burn`` times faster than the SLO allows over both a long and a short
window (:data:`BURN_RATES`): the long one makes it significant, the short one lets it stop soon after the
trouble ends. ``scale`` shrinks every window and ``for`` so that a lab run of minutes can fire them.
Beside those: the health monitor's probe of the app failing (``TargetDown``), a scrape target down
(``ExporterDown``; not the health monitor's own, which probes for a bounded time), PostgreSQL near
``max_connections``, and the caches' hit ratio collapsing.

:func:`render_rule_tests` writes the ``promtool test rules`` file that shows every alert firing when it
should (with its labels and annotations) and staying silent when it should.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

STANDARD_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    15.0,
    30.0,
    60.0,
)
LATENCY_BUDGET = 0.05  # "95 % of requests faster than p95_s"
RULES_FILE = "rules.yml"
# The windows of the burn rates, unscaled, by the label that names their recording rules.
WINDOWS = {"5m": 300, "30m": 1800, "1h": 3600, "2h": 7200, "6h": 21600, "1d": 86400}
CACHE_WINDOW = "5m"
CACHE_MIN_RPS = 0.5  # below this, a low hit ratio is noise, not a collapse
ERRORS_RECORD = "ragperf:sli_errors:ratio_rate"
SLOW_RECORD = "ragperf:sli_slow:ratio_rate"
NGINX_REQUESTS = "ragperf_nginx_requests_total"
CACHE_REQUESTS = "ragperf_cache_requests_total"
PROBE_UP = "ragperf_probe_up"
BOUNDED_JOB = "healthmon"  # the health monitor probes for a bounded time: its target going away is not an outage

_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_METRIC_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_MATCHER_RE = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!=|=)\s*"([^"\\]*)"\s*$')
_WORDS_RE = re.compile(r"^[A-Za-z0-9_.:/-]+(\|[A-Za-z0-9_.:/-]+)*$")


def latency_buckets(p95_s: float) -> tuple[float, ...]:
    """The histogram buckets every exporter of ours uses: :data:`STANDARD_BUCKETS` plus ``p95_s`` (sorted, once),
    so that "faster than the SLO" is one bucket's count."""
    _check_p95(p95_s)
    return tuple(sorted(set(STANDARD_BUCKETS) | {float(p95_s)}))


def le_regex(seconds: float) -> str:
    """A regex of the ``le`` label of the bucket ``seconds`` in every exporter's spelling: prometheus_client
    writes "5.0", mtail "5", so ``5(\\.0*)?``; "1.5" and "1.50" for 1.5 (RE2 syntax, anchored by Prometheus)."""
    text = repr(float(seconds))
    whole, _, fraction = text.partition(".")
    if "e" in text or not whole.isdigit():
        raise ValueError(f"p95_s: {seconds!r} has no plain decimal spelling")
    fraction = fraction.rstrip("0")
    return rf"{whole}(\.0*)?" if not fraction else rf"{whole}\.{fraction}0*"


def _check_p95(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.001 <= value <= 600:
        raise ValueError(f"p95_s: must be a number of seconds from 0.001 to 600, not {value!r}")


def _parse_selector(text: str) -> list[tuple[str, str, str]]:
    """The matchers of a selector text as (label, op, value); ValueError for what the rule tests cannot satisfy."""
    if not text.strip():
        return []
    matchers = []
    for part in text.split(","):
        match = _MATCHER_RE.match(part)
        if match is None:
            raise ValueError(
                f'selector: {part.strip()!r} is not label="value", label!="value" or label=~"a|b" '
                "(no quotes or backslashes in values)"
            )
        label, op, value = match.groups()
        if label in ("code", "le", "__name__"):
            raise ValueError(f"selector: the label {label!r} is the rules' own; select on other labels")
        if op == "=~" and not _WORDS_RE.match(value):
            raise ValueError(f'selector: {label}=~"{value}" must list plain words with "|", so the tests can match it')
        matchers.append((label, op, value))
    return matchers


@dataclass(frozen=True)
class Sli:
    """A service-level indicator: requests seen by one exporter, with their status and latency.

    ``requests`` is a counter with a ``code`` label (errors: ``code!~"2.."``; "0" means no response),
    ``duration`` the base name of a histogram of the same requests (``<duration>_bucket`` with ``le``,
    ``<duration>_count``), ``selector`` extra label matchers of both (``endpoint="ask"``; "" for none).

    Raises ValueError (naming the field and what is allowed) when a value is not valid.
    """

    name: str
    requests: str
    duration: str
    selector: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(f"name: must match [a-z_][a-z0-9_]*, not {self.name!r}")
        for label in ("requests", "duration"):
            value = getattr(self, label)
            if not isinstance(value, str) or not _METRIC_RE.match(value):
                raise ValueError(f"{label}: {value!r} is not a metric name")
        if self.duration.endswith(("_bucket", "_count", "_sum")):
            raise ValueError(f"duration: give the histogram's base name, not {self.duration!r}")
        if not isinstance(self.selector, str):
            raise ValueError(f"selector: must be label matchers text, not {self.selector!r}")
        _parse_selector(self.selector)

    def select(self, *extra: str) -> str:
        """``{selector, extra...}`` for a series selector."""
        return "{" + ", ".join([m for m in (self.selector.strip(), *extra) if m]) + "}"

    def labels(self) -> dict[str, str]:
        """Labels of a series that the selector matches (for the rule tests)."""
        values = {"=": lambda v: v, "=~": lambda v: v.split("|")[0], "!=": lambda v: f"not_{v}"}
        return {label: values[op](value) for label, op, value in _parse_selector(self.selector)}


@dataclass(frozen=True)
class BurnRate:
    """One multiwindow burn-rate alert: ``severity`` when the budget burns ``burn`` times too fast over both
    the ``long`` and the ``short`` window (labels of :data:`WINDOWS`)."""

    severity: str
    burn: float
    long: str
    short: str

    @property
    def burn_label(self) -> str:
        return f"{self.burn:g}"


# The SRE Workbook's: 2 % of a 30-day budget in 1 h, 5 % in 6 h (page); 10 % in 1 d (ticket).
BURN_RATES = (
    BurnRate("page", 14.4, "1h", "5m"),
    BurnRate("page", 6.0, "6h", "30m"),
    BurnRate("ticket", 3.0, "1d", "2h"),
)


@dataclass(frozen=True)
class _Alert:
    """One alerting rule, with what the tests expect of it. Annotations may use ``{{ $labels.x }}`` only."""

    name: str
    expr: str
    for_s: int
    labels: dict[str, str]
    summary: str
    description: str

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": f"{self.for_s}s",
            "labels": dict(self.labels),
            "annotations": {"summary": self.summary, "description": self.description},
        }

    def expected(self, series: Mapping[str, str]) -> dict[str, Any]:
        """An ``exp_alerts`` entry: the alert of a series with labels ``series``, annotations expanded."""

        def expand(text: str) -> str:
            return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: series[m.group(1)], text)

        return {
            "exp_labels": {**series, **self.labels},
            "exp_annotations": {"summary": expand(self.summary), "description": expand(self.description)},
        }


@dataclass(frozen=True)
class _Spec:
    """The validated parameters and everything derived from them, shared by the rules and their tests."""

    p95_s: float
    success_rate_pct: float
    slis: tuple[Sli, ...]
    scale: float
    scrape_interval_s: float
    for_s: float | None
    cache_hit_floor: float
    connections_ratio: float
    windows: dict[str, int] = field(init=False)
    clamped: list[str] = field(init=False)

    def __post_init__(self) -> None:
        floor = math.ceil(2 * self.scrape_interval_s + 1)
        windows, clamped = {}, []
        for label, seconds in WINDOWS.items():
            scaled = round(seconds * self.scale)
            if scaled < floor:
                clamped.append(f"{label} (scaled {max(scaled, 0)}s)")
            windows[label] = max(scaled, floor)
        object.__setattr__(self, "windows", windows)
        object.__setattr__(self, "clamped", clamped)

    @property
    def error_budget(self) -> float:
        return round(1 - self.success_rate_pct / 100, 12)

    def tiers(self, budget: float) -> list[BurnRate]:
        """The burn rates that can fire with ``budget``: a ratio of requests cannot exceed 1."""
        return [b for b in BURN_RATES if b.burn * budget < 1]

    def for_of(self, window: str) -> int:
        return round(self.for_s) if self.for_s is not None else self.windows[window]

    @property
    def floor_s(self) -> int:
        return math.ceil(2 * self.scrape_interval_s + 1)


def _spec(
    p95_s: float,
    success_rate_pct: float,
    slis: Sequence[Sli],
    scale: float,
    scrape_interval_s: float,
    for_s: float | None,
    cache_hit_floor: float,
    connections_ratio: float,
) -> _Spec:
    _check_p95(p95_s)
    _number("success_rate_pct", success_rate_pct, 0, 99.99, low_open=True)
    _number("scale", scale, 0, 1, low_open=True)
    _number("scrape_interval_s", scrape_interval_s, 1, 300)
    if for_s is not None:
        _number("for_s", for_s, 0, 7 * 86400)
    _number("cache_hit_floor", cache_hit_floor, 0, 1, low_open=True, high_open=True)
    _number("connections_ratio", connections_ratio, 0, 1, low_open=True, high_open=True)
    slis = tuple(slis)
    if not slis or not all(isinstance(s, Sli) for s in slis):
        raise ValueError(f"slis: must be one or more Sli, not {slis!r}")
    names = [s.name for s in slis]
    if len(set(names)) != len(names):
        raise ValueError(f"slis: each SLI needs its own name, not {names}")
    return _Spec(
        float(p95_s), float(success_rate_pct), slis, float(scale), float(scrape_interval_s),
        None if for_s is None else float(for_s), float(cache_hit_floor), float(connections_ratio),
    )  # fmt: skip


def _number(
    name: str, value: object, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high
    ok = ok and not (low_open and value == low) and not (high_open and value == high)
    if not ok:
        bounds = f"{'more than' if low_open else 'from'} {low:g} {'to less than' if high_open else 'to'} {high:g}"
        raise ValueError(f"{name}: must be a number {bounds}, not {value!r}")


# -- the rules -----------------------------------------------------------------------------------------


_FAILED = 'code!~"2.."'


def _failed_expr(sli: Sli, w: str) -> str:
    """The rate of the SLI's failed requests over the range ``w``, 0 when none failed (no series of theirs)."""
    return f"(sum(rate({sli.requests}{sli.select(_FAILED)}{w})) or vector(0))"


def _errors_expr(sli: Sli, window_s: int) -> str:
    """The share of the SLI's requests that failed over the window (0 when none failed, none when no traffic)."""
    w = f"[{window_s}s]"
    return f"{_failed_expr(sli, w)} / sum(rate({sli.requests}{sli.select()}{w}))"


def _slow_expr(sli: Sli, window_s: int, p95_s: float) -> str:
    """The share of the SLI's requests that were not answered successfully within ``p95_s`` over the window.

    Good is 2xx and inside the histogram's ``le`` bucket of ``p95_s``; the histogram has no ``code`` label, so
    bad = all requests (the counter, which also counts those that got no response) - the SLO bucket's + the
    failed ones, as a share of all, at most 1. Exact when every failure is faster than ``p95_s`` (they all sit in
    the bucket, so adding them back counts each once); conservative otherwise: a slow failure (a timeout, code
    "0") is outside the bucket and failed, so it counts twice before the clamp. None when there is no traffic.
    """
    w = f"[{window_s}s]"
    le = le_regex(p95_s).replace("\\", "\\\\")  # a backslash is escaped in a PromQL string
    total = f"sum(rate({sli.requests}{sli.select()}{w}))"
    bucket = f'le=~"{le}"'
    fast = f"sum(rate({sli.duration}_bucket{sli.select(bucket)}{w}))"
    return f"clamp_max(({total} - {fast} + {_failed_expr(sli, w)}) / {total}, 1)"


def _records(spec: _Spec) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for sli in spec.slis:
        for label, seconds in spec.windows.items():
            rules.append(
                {"record": f"{ERRORS_RECORD}{label}", "expr": _errors_expr(sli, seconds), "labels": {"sli": sli.name}}
            )
        for label, seconds in spec.windows.items():
            rules.append(
                {
                    "record": f"{SLOW_RECORD}{label}",
                    "expr": _slow_expr(sli, seconds, spec.p95_s),
                    "labels": {"sli": sli.name},
                }
            )
    return rules


def _burn_alerts(spec: _Spec) -> list[_Alert]:
    alerts = []
    kinds = (
        ("SLOErrorBudgetBurn", ERRORS_RECORD, spec.error_budget, "failed requests burn the error budget",
         "answered with a status other than 2xx (code 0: no response, a timeout or a refused connection)"),
        ("SLOLatencyBudgetBurn", SLOW_RECORD, LATENCY_BUDGET,
         f"requests failed or slower than {spec.p95_s:g} s burn the latency budget",
         f"not answered successfully within the SLO's {spec.p95_s:g} s (failed, or outside the histogram's "
         f"le={spec.p95_s:g} bucket)"),
    )  # fmt: skip
    for name, record, budget, short_what, what in kinds:
        for tier in spec.tiers(budget):
            threshold = f"({tier.burn:g} * {budget:g})"
            long_s, short_s = spec.windows[tier.long], spec.windows[tier.short]
            alerts.append(
                _Alert(
                    name=name,
                    expr=f"{record}{tier.long} > {threshold} and {record}{tier.short} > {threshold}",
                    for_s=spec.for_of(tier.short),
                    labels={
                        "severity": tier.severity,
                        "long_window": tier.long,
                        "short_window": tier.short,
                        "burn": tier.burn_label,
                    },  # fmt: skip
                    summary=f"SLI {{{{ $labels.sli }}}}: {short_what} {tier.burn:g}x too fast",
                    description=(
                        f"More than {tier.burn * budget:.4g} of the {{{{ $labels.sli }}}} requests were {what}, over "
                        f"both the last {long_s}s and {short_s}s (the {tier.long} and {tier.short} windows x "
                        f"{spec.scale:g}); the SLO "
                        f"allows {budget:.4g}, so the budget goes {tier.burn:g} times too fast. Look at "
                        f"{record}{tier.short} by sli in Prometheus, then the app's log and its upstream."
                    ),
                )
            )
    return alerts


def _health_alerts(spec: _Spec) -> list[_Alert]:
    w = spec.windows[CACHE_WINDOW]
    for_s = spec.for_of(CACHE_WINDOW)
    nginx = f"sum(rate({NGINX_REQUESTS}[{w}s]))"
    hits = (
        f'(sum(rate({NGINX_REQUESTS}{{cache="HIT"}}[{w}s])) or vector(0))'
        f' + (sum(rate({CACHE_REQUESTS}{{result=~"hit|coalesced"}}[{w}s])) or vector(0))'
    )
    return [
        _Alert(
            "TargetDown", f'{PROBE_UP}{{endpoint="health"}} == 0', for_s, {"severity": "page"},
            "The app does not answer the health monitor's probe of /health",
            f"ragperf_probe_up{{endpoint=\"health\"}} has been 0 for {for_s}s: the app is down or does not answer "
            "in time. Look at the health monitor's last errors, the app's processes and its log.",
        ),
        _Alert(
            "ExporterDown", f'up{{job!="{BOUNDED_JOB}"}} == 0', for_s, {"severity": "ticket"},
            "Prometheus cannot scrape {{ $labels.job }} at {{ $labels.instance }}",
            f"The scrape of job {{{{ $labels.job }}}} ({{{{ $labels.instance }}}}) has failed for {for_s}s, so its "
            "metrics are missing and the alerts built on them cannot fire. Look at Prometheus's targets page "
            "(last error) and the exporter's log.",
        ),
        _Alert(
            "PostgresConnectionsNearMax",
            f"sum(pg_connections_count) / max(pg_settings_max_connections) > {spec.connections_ratio:g}",
            for_s, {"severity": "ticket"},
            f"PostgreSQL uses more than {spec.connections_ratio:.0%} of max_connections",
            "Open connections (pg_connections_count from the postgres exporter, all states) are close to "
            "max_connections: new connections will soon be refused. A connection per request is the usual cause; "
            "look at pg_stat_activity by application and state, and at a pooler (PgBouncer).",
        ),
        _Alert(
            "CacheHitRatioCollapsed", f"({hits}) / {nginx} < {spec.cache_hit_floor:g} and {nginx} > {CACHE_MIN_RPS:g}",
            for_s, {"severity": "ticket"},
            f"Fewer than {spec.cache_hit_floor:.0%} of requests are answered by a cache",
            f"Over the last {w}s, with more than {CACHE_MIN_RPS:g} requests/s through nginx, the share answered by "
            "nginx's cache (cache=HIT) or the cache add-on (hit or coalesced) fell below "
            f"{spec.cache_hit_floor:g}: every request then costs an LLM call. Look at Redis (up, evictions, "
            "memory), the add-on's health and whether the cache key or TTL changed.",
        ),
    ]  # fmt: skip


def _header(spec: _Spec) -> str:
    lines = [
        "Written by ragperf (ragperf.systems.monitoring.alerting). Do not edit: render it again.",
        f"SLOs: {spec.success_rate_pct:g} % of requests succeed (error budget {spec.error_budget:g}); "
        f"95 % are answered successfully within {spec.p95_s:g} s (latency budget {LATENCY_BUDGET:g}).",
        f"Latency SLI: a request is good only when it succeeded (2xx) AND was faster than {spec.p95_s:g} s. The "
        "histograms have no code label, so the bad share is clamp_max((requests - le bucket + failed) / requests, "
        f"1): exact when failures are faster than {spec.p95_s:g} s, conservative otherwise (a slow failure, such as "
        'a request with no response, code "0", is counted twice before the clamp).',
        f"Windows scaled by {spec.scale:g}: "
        + ", ".join(f"{label} -> {seconds}s" for label, seconds in spec.windows.items())
        + "; recording rule names keep the unscaled window.",
    ]
    if spec.clamped:
        lines.append(
            f"Clamped to {spec.floor_s}s (2 x the scrape interval {spec.scrape_interval_s:g}s + 1 s, so that rate() "
            f"has two samples): {', '.join(spec.clamped)}."
        )
    for name, budget in (("SLOErrorBudgetBurn", spec.error_budget), ("SLOLatencyBudgetBurn", LATENCY_BUDGET)):
        left_out = [b for b in BURN_RATES if b not in spec.tiers(budget)]
        if left_out:
            lines.append(
                f"{name}: no {', '.join(f'{b.burn:g}x' for b in left_out)} rule: burn x budget {budget:g} is 1 or "
                "more, a share of requests no outage can exceed."
            )
    return "".join(f"# {line}\n" for line in lines)


class _Dumper(yaml.SafeDumper):
    """YAML with multi-line strings as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1_000, allow_unicode=True)


def render_rules(
    *,
    p95_s: float,
    success_rate_pct: float,
    slis: Sequence[Sli],
    scale: float,
    scrape_interval_s: float,
    for_s: float | None = None,
    cache_hit_floor: float = 0.2,
    connections_ratio: float = 0.8,
) -> str:
    """The rules file (``rules.yml``) for the SLOs and the health alerts.

    Recording rules ``ragperf:sli_errors:ratio_rate<w>`` and ``ragperf:sli_slow:ratio_rate<w>`` (label ``sli``)
    for every window of :data:`WINDOWS`; the alerts ``SLOErrorBudgetBurn`` and ``SLOLatencyBudgetBurn`` (labels
    severity, long_window, short_window, burn, sli), ``TargetDown``, ``ExporterDown``,
    ``PostgresConnectionsNearMax`` and ``CacheHitRatioCollapsed``.

    ``scale`` (0 < scale <= 1) multiplies every window and the default ``for`` (each burn alert's short window;
    the scaled 5 min window for the others); a window is never shorter than 2 x ``scrape_interval_s`` + 1 s.
    ``for_s``, when given, is every alert's ``for`` as it is (not scaled). A burn rate whose threshold
    (burn x budget) is 1 or more can never fire and is left out (the file says so).

    Raises:
        ValueError: a parameter is not valid (the message names it and what is allowed).
    """
    spec = _spec(p95_s, success_rate_pct, slis, scale, scrape_interval_s, for_s, cache_hit_floor, connections_ratio)
    groups = [
        {"name": "ragperf_slo", "rules": _records(spec) + [a.rule() for a in _burn_alerts(spec)]},
        {"name": "ragperf_health", "rules": [a.rule() for a in _health_alerts(spec)]},
    ]
    return _header(spec) + _dump({"groups": groups})


# -- the rules' unit tests -----------------------------------------------------------------------------

_PER_STEP = 100_000  # requests per test step: whole numbers keep every counter exact
_CACHE_RPS = 40  # requests/s through nginx in the cache tests (well above CACHE_MIN_RPS)
_IDLE_RPS = 0.25  # ... and below it (exact in binary)


def _counter(segments: Sequence[tuple[float, int]]) -> str:
    """Expanding notation of a counter starting at 0 that grows by ``inc`` per step for ``steps`` steps, per segment."""
    parts, value = ["0"], 0.0
    for inc, steps in segments:
        if steps <= 0:
            continue
        parts.append(f"{_num(value + inc)}+{_num(inc)}x{steps - 1}")
        value += inc * steps
    return " ".join(parts)


def _gauge(segments: Sequence[tuple[float, int]]) -> str:
    """Expanding notation of a gauge that holds ``value`` for ``steps`` samples, per segment."""
    return " ".join(f"{_num(value)}+0x{steps - 1}" for value, steps in segments if steps > 0)


def _num(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def _series(name: str, labels: Mapping[str, str]) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


class _Timeline:
    """The input series of one test group: each SLI's error and slow shares per segment of steps."""

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec
        self.series: dict[str, str] = {}

    def add(self, name: str, labels: Mapping[str, str], values: str) -> None:
        self.series.setdefault(_series(name, labels), values)

    def slis(self, segments: Sequence[tuple[float, float, int]], *, no_response: float = 0.5) -> None:
        """Every SLI with (error share, slow share, steps) per segment, in whole requests per step.

        The failed requests are code "500" and, ``no_response`` of them, code "0"; the slow ones are outside the
        SLO bucket. While error + slow share is 1 or less the failures are fast (inside the bucket), so the
        latency SLI's bad share is their sum; beyond that the extra failures are slow too (it is then 1). Two
        exporters (``instance``) share the requests, one spelling the bucket like prometheus_client ("5.0"),
        the other like mtail ("5"), so a rule that takes one spelling only misses half the fast requests.
        """
        py = repr(float(self.spec.p95_s))
        spellings = (("prometheus_client", py), ("mtail", py.removesuffix(".0")))
        for sli in self.spec.slis:
            for half, (instance, le) in enumerate(spellings):

                def part(count: int, half: int = half) -> int:  # this exporter's part of ``count`` requests
                    return count // 2 if half == 0 else count - count // 2

                rows: dict[str, list[tuple[float, int]]] = {"200": [], "500": [], "0": [], "all": [], "fast": []}
                for error, slow, n in segments:
                    total, failed = part(_PER_STEP), part(round(error * _PER_STEP))
                    lost = round(failed * no_response)
                    for key, inc in (("200", total - failed), ("500", failed - lost), ("0", lost), ("all", total),
                                     ("fast", part(_PER_STEP - round(slow * _PER_STEP)))):  # fmt: skip
                        rows[key].append((inc, n))
                labels = sli.labels() | {"instance": instance}
                for code in ("200", "500", "0"):
                    self.add(sli.requests, labels | {"code": code}, _counter(rows[code]))
                self.add(f"{sli.duration}_count", labels, _counter(rows["all"]))
                self.add(f"{sli.duration}_bucket", labels | {"le": "+Inf"}, _counter(rows["all"]))
                self.add(f"{sli.duration}_bucket", labels | {"le": le}, _counter(rows["fast"]))

    def input_series(self) -> list[dict[str, str]]:
        return [{"series": name, "values": values} for name, values in self.series.items()]


def _share(target: float) -> float:
    """``target`` as the whole-requests share the series really have."""
    return round(target * _PER_STEP) / _PER_STEP


class _Tests:
    """Builds the test groups of one spec."""

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec
        self.burn = _burn_alerts(spec)
        self.health = {a.name: a for a in _health_alerts(spec)}
        floor = min(spec.windows.values())
        self.step = max([1] + [v for v in (1, 2, 5, 10, 15, 30, 60) if v <= floor / 4])
        fors = [a.for_s for a in self.burn] + [a.for_s for a in self.health.values()]
        # Every `for` has passed. A constant share is exact in a window that is not full yet (all counters start
        # at 0, so rate() does not extrapolate before the first sample), so the windows need not fill: that
        # keeps promtool quick at scale 1.
        self.settle = self.steps(max(fors)) + 3
        self.groups: list[dict[str, Any]] = []

    def steps(self, seconds: float) -> int:
        return math.ceil(seconds / self.step)

    def at(self, step: int) -> str:
        return f"{step * self.step}s"

    def group(self, name: str, series: list[dict[str, str]], checks: list[dict[str, Any]], **extra: Any) -> None:
        self.groups.append(
            {"name": name, "interval": f"{self.step}s", "input_series": series, "alert_rule_test": checks, **extra}
        )

    @staticmethod
    def check(step_at: str, alertname: str, expected: list[dict[str, Any]]) -> dict[str, Any]:
        return {"eval_time": step_at, "alertname": alertname, "exp_alerts": expected}

    def firing(self, alertname: str, fired: Callable[[_Alert], bool]) -> list[dict[str, Any]]:
        """The burn alerts of ``alertname`` that ``fired`` picks, for every SLI."""
        return [
            alert.expected({"sli": sli.name})
            for alert in self.burn
            if alert.name == alertname and fired(alert)
            for sli in self.spec.slis
        ]

    def burn_checks(self, at: str, error_fires: Callable[[_Alert], bool], slow_fires: Callable[[_Alert], bool]) -> list:
        return [
            self.check(at, "SLOErrorBudgetBurn", self.firing("SLOErrorBudgetBurn", error_fires)),
            self.check(at, "SLOLatencyBudgetBurn", self.firing("SLOLatencyBudgetBurn", slow_fires)),
        ]


def _healthy_shares(spec: _Spec) -> tuple[float, float]:
    """Error and latency (failed or slow) shares below every threshold (half the lowest)."""
    lowest = [min(b.burn for b in BURN_RATES) * spec.error_budget, min(b.burn for b in BURN_RATES) * LATENCY_BUDGET]
    return _share(lowest[0] / 2), _share(lowest[1] / 2)


def _healthy_mix(spec: _Spec) -> tuple[float, float]:
    """A healthy error share and slow share together: fast failures and slow successes, their sum (the latency
    SLI's bad share) the healthy latency share, both kinds in it."""
    healthy_error, healthy_latency = _healthy_shares(spec)
    error = min(healthy_error, _share(healthy_latency / 2))
    return error, _share(healthy_latency - error)


def _latency_share(error: float, wanted: float | None, candidates: Sequence[float]) -> float:
    """The latency SLI's bad share of a test whose error share is ``error``: ``wanted`` when it is at least
    ``error`` (every failure is a bad request for the latency SLI too), else the lowest of ``candidates`` (shares
    clear of every latency threshold) that is, else ``error`` itself (above every candidate, so every threshold)."""
    if wanted is not None and wanted >= error:
        return wanted
    return min([c for c in candidates if c >= error], default=error)


def _bands(budget: float, tiers: Sequence[BurnRate]) -> list[tuple[float, list[float]]]:
    """For each tier (fastest burn first), a share between its threshold and the next higher one (or 1), and
    the burns that share fires (that tier and every slower one)."""
    ordered = sorted(tiers, key=lambda b: -b.burn)
    bands = []
    for k, tier in enumerate(ordered):
        low = tier.burn * budget
        high = ordered[k - 1].burn * budget if k else 1.0
        share = _share(math.sqrt(low * high))
        if not low < share < high:
            raise ValueError(f"success_rate_pct: the budget {budget:g} is too small for whole-request test shares")
        bands.append((share, [b.burn for b in ordered[k:]]))
    return bands


def _fires(burns: Sequence[float], held_s: float) -> Callable[[_Alert], bool]:
    """The tiers of ``burns`` whose condition has held ``held_s`` seconds: those whose `for` has passed."""
    return lambda a: float(a.labels["burn"]) in burns and a.for_s <= held_s


def _steady_groups(t: _Tests) -> None:
    """A constant error share and latency share in each band between thresholds: exactly its tiers fire.

    A failure is a bad request for the latency SLI too, so its share is never below the error share. Group 1 has
    the highest error band (with a latency share at least as high); group k + 1 the latency band k, made of the
    error band k + 1 (or a healthy error share) plus slow requests, so that the latency alert needs both counted.
    """
    spec = t.spec
    healthy_error, healthy_latency = _healthy_shares(spec)
    error_bands = _bands(spec.error_budget, spec.tiers(spec.error_budget))
    slow_bands = _bands(LATENCY_BUDGET, spec.tiers(LATENCY_BUDGET))
    candidates = [healthy_latency] + [share for share, _ in slow_bands]
    pairs: list[tuple[tuple[float, list[float]] | None, tuple[float, list[float]] | None]] = []
    if error_bands:
        pairs.append((error_bands[0], None))
    for k in range(max(len(slow_bands), len(error_bands) - 1)):
        pairs.append(
            (error_bands[k + 1] if k + 1 < len(error_bands) else None, slow_bands[k] if k < len(slow_bands) else None)
        )
    for k, (error_band, slow_band) in enumerate(pairs):
        wanted = slow_band[0] if slow_band else None
        error, error_burns = error_band or (min(healthy_error, _share((wanted or healthy_latency) / 2)), [])
        latency = _latency_share(error, wanted, candidates)
        latency_burns = [b.burn for b in spec.tiers(LATENCY_BUDGET) if b.burn * LATENCY_BUDGET < latency]
        slow = _share(latency - error)
        line = _Timeline(spec)
        line.slis([(error, slow, t.settle + 1)])
        # True from step 1 (two samples) on: pending at step 2 unless its `for` is one step or less.
        checks = t.burn_checks(t.at(2), _fires(error_burns, t.step), _fires(latency_burns, t.step))
        checks += t.burn_checks(t.at(t.settle), _fires(error_burns, math.inf), _fires(latency_burns, math.inf))
        t.group(
            f"burn band {k + 1}: error share {error:g}, latency share {latency:g} (fast failures + {slow:g} slow)",
            line.input_series(),
            checks,
        )


DRILL_FAILED = 0.96  # the share of requests that failed in the fault drill (the LLM behind the app stopped)


def _drill_group(t: _Tests) -> None:
    """The fault drill: the LLM behind the app stops and 96 % of requests fail fast (code 500, all inside the SLO
    bucket). The latency SLI counts them as bad (its share is the failures' own), so the latency alert pages as
    the error alert does: the fastest burn as soon as its `for` has passed (the slower ones, whose `for` is longer,
    still pending then; the band groups show them). Short: it ends there."""
    spec = t.spec
    fastest = max(b.burn for b in BURN_RATES)
    page = t.steps(max(a.for_s for a in t.burn if float(a.labels["burn"]) == fastest)) + 1
    line = _Timeline(spec)
    line.slis([(DRILL_FAILED, 0.0, page + 1)], no_response=0.0)
    held = (page - 1) * t.step  # true from step 1 (two samples) on
    checks = [
        t.check(t.at(page), name, t.firing(name, _fires([b.burn for b in spec.tiers(budget)
                                                         if b.burn * budget < DRILL_FAILED], held)))
        for name, budget in (("SLOErrorBudgetBurn", spec.error_budget), ("SLOLatencyBudgetBurn", LATENCY_BUDGET))
    ]  # fmt: skip
    exprs = [
        {
            "expr": f'abs({SLOW_RECORD}{window}{{sli="{sli.name}"}} - {DRILL_FAILED!r}) < bool 1e-9',
            "eval_time": t.at(page),
            "exp_samples": [{"labels": f'{{sli="{sli.name}"}}', "value": 1}],
        }
        for sli in spec.slis
        for window in WINDOWS
    ]
    t.group(
        f"fault drill: {DRILL_FAILED:.0%} of requests fail fast (code 500, inside the SLO bucket): the latency alert "
        "pages",
        line.input_series(),
        checks,
        promql_expr_test=exprs,
    )


def _recovery_group(t: _Tests) -> None:
    """Everything fails and is slow until R, then nothing: all fire at R; once every short window is past R, none
    fire although the long windows still hold the outage (the short window ends the alert). At R the latency
    SLI's bad share is 1: each slow failure counts twice (outside the bucket and failed), and the clamp holds it."""
    spec = t.spec
    outage = t.settle
    shorts = {a.labels["short_window"] for a in t.burn} or {"5m"}
    quiet = outage + t.steps(max(spec.windows[s] for s in shorts)) + 2
    line = _Timeline(spec)
    line.slis([(1.0, 1.0, outage), (0.0, 0.0, quiet - outage + 1)])
    checks = t.burn_checks(t.at(outage), lambda a: True, lambda a: True)
    checks += t.burn_checks(t.at(quiet), lambda a: False, lambda a: False)
    partial = _partial_recovery(t, outage)
    if partial is not None:
        step, fires = partial
        checks += t.burn_checks(t.at(step), fires, fires)
    clamped = [
        {
            "expr": f'{SLOW_RECORD}{window}{{sli="{sli.name}"}} == bool 1',
            "eval_time": t.at(outage),
            "exp_samples": [{"labels": f'{{sli="{sli.name}"}}', "value": 1}],
        }
        for sli in spec.slis
        for window in WINDOWS
    ]
    t.group("outage then recovery", line.input_series(), checks, promql_expr_test=clamped)


def _partial_recovery(t: _Tests, outage: int) -> tuple[int, Callable[[_Alert], bool]] | None:
    """A time just after the fastest tier's short window left the outage, and which tiers still fire then;
    None when a tier's state then would be too close to call."""
    tiers = [a for a in t.burn if a.labels["burn"] == f"{max(b.burn for b in BURN_RATES):g}"]
    if not tiers:
        return None
    step = outage + t.steps(t.spec.windows[tiers[0].labels["short_window"]]) + 2
    now, end, after = step * t.step, outage * t.step, (step - outage) * t.step
    verdict: dict[tuple[str, str], bool] = {}

    def failed_share(window: int) -> float:  # at least, allowing two steps for rate()'s ends
        span = min(window, now)
        return (end - (now - span) - 2 * t.step) / span

    for alert in t.burn:
        budget = t.spec.error_budget if alert.name == "SLOErrorBudgetBurn" else LATENCY_BUDGET
        threshold = float(alert.labels["burn"]) * budget
        short, long = (t.spec.windows[alert.labels[k]] for k in ("short_window", "long_window"))
        if short <= after - 2 * t.step:
            verdict[(alert.name, alert.labels["burn"])] = False  # the short window holds no failure
        elif min(failed_share(short), failed_share(long)) > 2 * threshold:
            verdict[(alert.name, alert.labels["burn"])] = True  # both windows still mostly the outage
        else:
            return None
    return step, lambda a: verdict[(a.name, a.labels["burn"])]


def _health_groups(t: _Tests) -> None:
    """TargetDown, ExporterDown and PostgresConnectionsNearMax: silent, pending, then firing with their labels."""
    spec, before = t.spec, 3
    low, high = _connections(spec, healthy=True), _connections(spec, healthy=False)
    cases = [
        ("TargetDown", [(PROBE_UP, {"endpoint": "health", "instance": "monitor"}, 1, 0, True),
                        (PROBE_UP, {"endpoint": "ask", "instance": "monitor"}, 0, 0, False)]),
        ("ExporterDown", [("up", {"job": "postgres", "instance": "127.0.0.1:9187"}, 1, 0, True),
                          ("up", {"job": "node", "instance": "127.0.0.1:9100"}, 1, 1, False),
                          ("up", {"job": BOUNDED_JOB, "instance": "127.0.0.1:9999"}, 1, 0, False)]),
        ("PostgresConnectionsNearMax", [
            ("pg_connections_count", {"datname": "rag", "state": "idle"}, low / 4, high / 4, False),
            ("pg_connections_count", {"datname": "rag", "state": "active"}, low * 3 / 4, high * 3 / 4, False),
            ("pg_settings_max_connections", {"server": "127.0.0.1:5432"}, 100, 100, False)]),
    ]  # fmt: skip
    for alertname, rows in cases:
        alert = t.health[alertname]
        fire = before + t.steps(alert.for_s)
        series = [{"series": _series(n, lb), "values": _gauge([(v0, before), (v1, fire + 3 - before)])}
                  for n, lb, v0, v1, _ in rows]  # fmt: skip
        fired = [alert.expected(lb) for _, lb, _, _, firing in rows if firing] or [alert.expected({})]
        checks = [t.check(t.at(before - 1), alertname, [])]
        if fire - 1 >= before:
            checks.append(t.check(t.at(fire - 1), alertname, []))  # pending: its `for` has not passed
        checks.append(t.check(t.at(fire + 1), alertname, fired))
        t.group(f"{alertname}: silent, then firing", series, checks)


def _connections(spec: _Spec, *, healthy: bool) -> float:
    """Open connections out of max_connections 100: half the alert's ratio, or halfway from it to 100."""
    ratio = spec.connections_ratio
    return 100 * (ratio / 2 if healthy else (1 + ratio) / 2)


def _cache_series(t: _Tests, segments: Sequence[tuple[float, float, int]], hit_series: bool = True) -> list[dict]:
    """nginx and add-on counters for (requests/s, share answered by a cache, steps) per segment."""
    rows: dict[str, list[tuple[float, int]]] = {
        "nginx_hit": [],
        "nginx_miss": [],
        "hit": [],
        "coalesced": [],
        "miss": [],
    }
    for rps, share, n in segments:
        total = rps * t.step
        hits = round(share * total)
        nginx_hit = hits // 2
        addon_hit = (hits - nginx_hit) // 2
        coalesced = hits - nginx_hit - addon_hit
        for key, inc in (("nginx_hit", nginx_hit), ("nginx_miss", total - nginx_hit), ("hit", addon_hit),
                         ("coalesced", coalesced), ("miss", total - hits)):  # fmt: skip
            rows[key].append((inc, n))
    series = [(NGINX_REQUESTS, {"cache": "MISS", "code": "200"}, "nginx_miss")]
    if hit_series:
        series += [(NGINX_REQUESTS, {"cache": "HIT", "code": "200"}, "nginx_hit")]
        series += [(CACHE_REQUESTS, {"result": r}, r) for r in ("hit", "coalesced", "miss")]
    return [{"series": _series(name, labels), "values": _counter(rows[key])} for name, labels, key in series]


def _cache_groups(t: _Tests) -> None:
    """CacheHitRatioCollapsed: fires when the hits stop (or never had a series) under traffic; silent when
    the caches answer enough, or when there is too little traffic to tell."""
    spec = t.spec
    alert = t.health["CacheHitRatioCollapsed"]
    window = t.steps(spec.windows[CACHE_WINDOW])
    good = (1 + spec.cache_hit_floor) / 2
    warm = window + 3
    fire = warm + window + t.steps(alert.for_s) + 2
    series = _cache_series(t, [(_CACHE_RPS, good, warm), (_CACHE_RPS, 0.0, fire - warm + 2)])
    checks = [t.check(t.at(warm - 1), alert.name, []), t.check(t.at(fire), alert.name, [alert.expected({})])]
    t.group("CacheHitRatioCollapsed: the hits stop", series, checks)
    quick = window + t.steps(alert.for_s) + 3
    series = _cache_series(t, [(_CACHE_RPS, 0.0, quick + 1)], hit_series=False)
    t.group(
        "CacheHitRatioCollapsed: no hit series at all", series, [t.check(t.at(quick), alert.name, [alert.expected({})])]
    )
    series = _cache_series(t, [(_IDLE_RPS, 0.0, quick + 1)], hit_series=False)
    t.group("CacheHitRatioCollapsed: too little traffic to tell", series, [t.check(t.at(quick), alert.name, [])])


def _healthy_groups(t: _Tests) -> None:
    """All healthy, a mix of fast failures and slow successes: every alert silent, and the recorded shares are
    the series' own (the latency one the sum of both kinds; both ``le`` spellings).

    The SLIs and the health alerts' series are in two groups: an SLI may count the very nginx requests the
    cache alert counts, and its failures would then count as cache misses.
    """
    spec, end = t.spec, t.settle
    error, slow = _healthy_mix(spec)
    latency = _share(error + slow)
    line = _Timeline(spec)
    line.slis([(error, slow, end + 1)])
    exprs = [
        {
            "expr": f'abs({record}{window}{{sli="{sli.name}"}} - {share!r}) < bool 1e-9',
            "eval_time": t.at(end),
            "exp_samples": [{"labels": f'{{sli="{sli.name}"}}', "value": 1}],
        }
        for sli in spec.slis
        for record, share in ((ERRORS_RECORD, error), (SLOW_RECORD, latency))
        for window in WINDOWS
    ]
    checks = t.burn_checks(t.at(end), lambda a: False, lambda a: False)
    t.group(
        f"all healthy (fast failures {error:g} + slow successes {slow:g}): no SLO alert",
        line.input_series(),
        checks,
        promql_expr_test=exprs,
    )
    series = []
    for name, labels, value in (
        (PROBE_UP, {"endpoint": "health", "instance": "monitor"}, 1),
        ("up", {"job": "prometheus", "instance": "127.0.0.1:9090"}, 1),
        ("up", {"job": "postgres", "instance": "127.0.0.1:9187"}, 1),
        ("pg_connections_count", {"datname": "rag", "state": "active"}, _connections(spec, healthy=True)),
        ("pg_settings_max_connections", {"server": "127.0.0.1:5432"}, 100),
    ):
        series.append({"series": _series(name, labels), "values": _gauge([(value, end + 1)])})
    series += _cache_series(t, [(_CACHE_RPS, (1 + spec.cache_hit_floor) / 2, end + 1)])
    t.group("all healthy: no health alert", series, [t.check(t.at(end), name, []) for name in t.health])


def render_rule_tests(
    *,
    p95_s: float,
    success_rate_pct: float,
    slis: Sequence[Sli],
    scale: float,
    scrape_interval_s: float,
    for_s: float | None = None,
    cache_hit_floor: float = 0.2,
    connections_ratio: float = 0.8,
) -> str:
    """The ``promtool test rules`` file of the rules :func:`render_rules` writes with the same parameters.

    It shows every alert firing when it should (its labels and annotations) and silent when it should: a
    constant share of errors and slow requests in each band between the burn thresholds fires exactly the
    tiers at or below it (the latency share is the fast failures plus the slow requests); the fault drill
    (96 % of requests failing fast, code 500, inside the SLO bucket) pages for latency as for errors; an outage
    fires all, its latency share clamped at 1, and once the short windows are past it none (while the long
    windows still hold it); each health alert goes from silent through pending to firing; and with a healthy
    mix of fast failures and slow successes nothing fires while the recorded shares equal the series' own,
    with the SLO bucket spelt "5.0" by one exporter and "5" by another. Samples come every scrape interval, or
    coarser when the windows are long (never fewer than four per window), to keep promtool quick.

    Raises:
        ValueError: a parameter is not valid (the message names it and what is allowed).
    """
    spec = _spec(p95_s, success_rate_pct, slis, scale, scrape_interval_s, for_s, cache_hit_floor, connections_ratio)
    tests = _Tests(spec)
    _healthy_groups(tests)
    _steady_groups(tests)
    _drill_group(tests)
    _recovery_group(tests)
    _health_groups(tests)
    _cache_groups(tests)
    header = (
        "# Written by ragperf (ragperf.systems.monitoring.alerting): unit tests of rules.yml, for\n"
        "# `promtool test rules`. Do not edit: render it again with the rules' parameters.\n"
    )
    return header + _dump({"rule_files": [RULES_FILE], "evaluation_interval": f"{tests.step}s", "tests": tests.groups})
