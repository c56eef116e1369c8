"""The ``ragperf`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from ragperf import lab
from ragperf.core import redact
from ragperf.lab import labdb, pginstall
from ragperf.runs import RunError, rollback

log = logging.getLogger(__name__)

OWN_PACKAGES = ("ragperf", "ragperf_lab")
"""Errors of classes defined here say what is wrong and what to do; any other kind is named as such."""


def _cmd_setup_postgres(args: argparse.Namespace) -> int:
    versions = pginstall.ensure_installed()
    labdb.ensure_service_user()
    print(f"embedded PostgreSQL {versions['postgresql']} with pgvector {versions['pgvector']} "
          f"in {pginstall.install_dir()}")  # fmt: skip
    return 0


def _cmd_lab_up(args: argparse.Namespace) -> int:
    lab.up(args.profile)
    _print_status(lab.status(), as_json=False)
    return 0


def _cmd_lab_down(args: argparse.Namespace) -> int:
    stopped = lab.down()
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def _cmd_lab_status(args: argparse.Namespace) -> int:
    info = lab.status()
    _print_status(info, as_json=args.json)
    return 0 if info["up"] else 3


def _cmd_run(args: argparse.Namespace) -> int:
    from ragperf.runs import execute

    run = execute.run(args.phase, profile=args.profile, target=args.target, params_files=args.params or (),
                      run_id=args.run_id)  # fmt: skip
    print(f"run {run.id}: {run.path}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ragperf import runs
    from ragperf.runs import report

    run_id = args.run_id or next(iter(runs.list_runs()), None)
    if run_id is None:
        raise RunError(f"no runs in {runs.outputs_dir()}: run `ragperf run all` first")
    made = report.render_report(run_id)
    print(f"report: {made.html}")
    print(f"pdf:    {made.pdf}" if made.pdf else f"pdf:    not made: {made.pdf_error}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from ragperf import runs
    from ragperf.measure import compare

    table, heading = runs.compare_runs(args.baseline, args.current)
    print(heading)
    print(compare.compare_text(table))
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"table: {args.csv}")
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    from ragperf import runs
    from ragperf.measure import charts
    from ragperf.runs import history

    table = history.history(args.phase, args.metric)
    if table.empty:
        root = runs.outputs_dir()
        if args.phase is None or not runs.list_runs():
            raise RunError(f"no runs in {root}: run `ragperf run all` first (or set {runs.OUTPUTS_ENV} to where "
                           f"the runs are)")  # fmt: skip
        recorded = sorted(set(history.history()["phase"]), key=runs.phase_sort_key)
        raise RunError(f"no runs in {root} have {args.phase}/metrics.json; phases recorded: "
                       f"{', '.join(recorded) or 'none'}")  # fmt: skip
    print(history.history_text(table))
    path = Path(args.chart) if args.chart else runs.outputs_dir() / "history.png"
    charts.save(history.history_chart(table), path)
    print(f"chart: {path}")
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"table: {args.csv}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from ragperf.runs import history

    gate = history.check(args.baseline, args.current, tolerance_pct=args.tolerance, metrics=args.metric)
    print(gate.heading)
    print(gate.text())
    return 0 if gate.ok else 1


def _cmd_lab_reset(args: argparse.Namespace) -> int:
    from ragperf.runs import rollback

    done = rollback.reset_lab()
    print("undone: " + ("; ".join(done) if done else "nothing, the lab was untuned"))
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from ragperf import runs
    from ragperf.core import params, targetlock

    params.check_phase(args.phase)
    run_id = args.run or next(iter(rollback.outstanding_runs(args.phase)), None)
    if run_id is None:
        raise RunError(f"no run in outputs/ has {args.phase} changes left to undo (give --run to check one)")
    recorded = params.Params.model_validate(runs.open_run(run_id).recorded_params(args.phase))
    target = targetlock.params_target(recorded, lab.default_lab_dir())
    with targetlock.held(target, command=targetlock.command_line()):  # not while a run holds the target
        result = rollback.rollback_run(run_id, args.phase)
    print(result.text())
    return 1 if result.differences else 0


def _cache_dir(args: argparse.Namespace) -> Path:
    return Path(args.dir).absolute() if args.dir else lab.default_lab_dir() / "cache"


def _cmd_cache_purge(args: argparse.Namespace) -> int:
    from ragperf.systems import cachetier

    base = _cache_dir(args)
    now = cachetier.running(base)
    if not now.any():
        raise RunError(f"no caching tier runs from {base} (give --dir for a tier kept elsewhere)")
    done = cachetier.purge(now)
    print(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in done.items()))
    return 0


def _cmd_cache_status(args: argparse.Namespace) -> int:
    from ragperf.systems import cachetier

    now = cachetier.running(_cache_dir(args))
    for name in cachetier.PARTS:
        cfg = getattr(now, name)
        print(f"  {name:6} " + (json.dumps(cfg.to_dict(), default=str) if cfg else "not running"))
    return 0 if now.any() else 3


def _cmd_monitor_status(args: argparse.Namespace) -> int:
    from ragperf.systems.monitoring import stack

    base = Path(args.dir).absolute() if args.dir else lab.default_lab_dir() / "monitor"
    status = stack.status(base)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print(f"monitoring kept in {base}")
        for name, part in status.items():
            where = f"pid {part['pid']:>7}  port {part['port']}" if part["running"] else "not running"
            print(f"  {name:15} {where}")
        prometheus = status["prometheus"]
        if prometheus["running"]:
            print(f"  Prometheus     http://127.0.0.1:{prometheus['port']}  (targets: /targets, alerts: /alerts)")
    return 0 if any(part["running"] for part in status.values()) else 3


def _cmd_scale_status(args: argparse.Namespace) -> int:
    from ragperf.systems import scaletier

    base = Path(args.dir).absolute() if args.dir else lab.default_lab_dir() / "scale"
    status = scaletier.status(base)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print(f"Phase 4's tier kept in {base}")
        for name, part in status.items():
            port = f"  port {part['port']}" if part["port"] else ""
            print(f"  {name:10} " + (f"pid {part['pid']:>7}{port}" if part["running"] else "not running"))
        for program in status["instances"].get("programs") or []:
            print(f"    {program['name']:8} {program['state']:9} pid {program['pid']:>7}  port {program['port']}")
    return 0 if any(part["running"] for part in status.values()) else 3


def _print_status(info: dict, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return
    print(f"lab {'UP' if info['up'] else 'DOWN'} ({info['lab_dir']}), profile: {info['profile']}")
    for name, svc in info["services"].items():
        state = "alive" if svc["alive"] else "DEAD"
        print(f"  {name:9} pid {svc['pid']:>7}  port {svc['port']}  {state}")
    if info["app_url"]:
        print(f"  app      {info['app_url']}  (POST /ask, GET /health)")
        print(f"  dsn      {info['dsn']}  (password in {info['lab_dir']}/secrets.json)")
    tier = info.get("cache_tier") or {}
    if any(tier.values()):
        print(f"  cached   {tier['nginx']} (nginx) -> {tier['cache_addon']} (add-on) -> app; Redis {tier['redis']}")
    monitoring = info.get("monitoring") or {}
    if monitoring.get("running"):
        print(f"  monitor  Prometheus {monitoring['prometheus']}; running: {', '.join(monitoring['running'])}")
    if info.get("scale"):
        print(f"  scale    Phase 4 running: {', '.join(info['scale'])} (ragperf scale status)")
    if info["corpus"]:
        c = info["corpus"]
        print(
            f"  corpus   {c.get('chunks')} chunks loaded in {c.get('load_seconds')} s, {c.get('questions')} questions"
        )


class _Parser(argparse.ArgumentParser):
    """argparse, whose usage errors (which quote the arguments) are masked of secrets like every message."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {redact.scrub_message(message)}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one sub-command per verb."""
    parser = _Parser(prog="ragperf", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done")
    parser.add_argument("--debug", action="store_true", help="on an error, show its traceback (secrets masked)")
    sub = parser.add_subparsers(dest="command", required=True)

    setup = sub.add_parser("setup-postgres", help="install the lab's embedded PostgreSQL + pgvector")
    setup.set_defaults(func=_cmd_setup_postgres)

    lab_parser = sub.add_parser("lab", help="the lab: the embedded stand-in of the users' service")
    lab_sub = lab_parser.add_subparsers(dest="lab_command", required=True)
    lab_up = lab_sub.add_parser("up", help="start the lab (idempotent; recovers after a crash)")
    lab_up.add_argument("--profile", default="smoke", choices=lab.PROFILES)
    lab_up.set_defaults(func=_cmd_lab_up)
    lab_sub.add_parser("down", help="stop the processes the lab started").set_defaults(func=_cmd_lab_down)
    lab_status = lab_sub.add_parser("status", help="what runs where (exit 3 when not up)")
    lab_status.add_argument("--json", action="store_true")
    lab_status.set_defaults(func=_cmd_lab_status)

    lab_sub.add_parser("reset", help="undo any tuning left on the lab (settings, indexes, role settings)").set_defaults(
        func=_cmd_lab_reset
    )

    rollback = sub.add_parser("rollback", help="undo a phase's changes from its journal and verify pg_settings")
    rollback.add_argument("phase", help="phase1, phase2 ...")
    rollback.add_argument("--run", help="the run whose phase to undo (default: the newest with changes left)")
    rollback.set_defaults(func=_cmd_rollback)

    cache = sub.add_parser("cache", help="Phase 2's caching tier (nginx, the cache add-on, Redis)")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    for name, func, text in (("purge", _cmd_cache_purge, "empty both caches (after the corpus changed)"),
                             ("status", _cmd_cache_status, "what of the tier runs (exit 3 when nothing)")):  # fmt: skip
        command = cache_sub.add_parser(name, help=text)
        command.add_argument("--dir", help="the tier's state directory (default: the lab's, .lab/cache)")
        command.set_defaults(func=func)

    monitor = sub.add_parser("monitor", help="Phase 3's monitoring (Prometheus, exporters, Alertmanager)")
    monitor_sub = monitor.add_subparsers(dest="monitor_command", required=True)
    monitor_status = monitor_sub.add_parser("status", help="what of the monitoring runs (exit 3 when nothing)")
    monitor_status.add_argument("--dir", help="the monitoring's state directory (default: the lab's)")
    monitor_status.add_argument("--json", action="store_true", help="as JSON")
    monitor_status.set_defaults(func=_cmd_monitor_status)
    scale = sub.add_parser("scale", help="Phase 4's tier (app instances, load balancer, PgBouncer)")
    scale_sub = scale.add_subparsers(dest="scale_command", required=True)
    scale_status = scale_sub.add_parser("status", help="what of Phase 4's tier runs (exit 3 when nothing)")
    scale_status.add_argument("--dir", help="the tier's state directory (default: the lab's)")
    scale_status.add_argument("--json", action="store_true", help="as JSON")
    scale_status.set_defaults(func=_cmd_scale_status)

    run = sub.add_parser("run", help="execute a phase notebook (or all) with papermill into a run directory")
    run.add_argument("phase", help="phase0, phase1 ... or all")
    run.add_argument("--profile", default="smoke", choices=lab.PROFILES)
    run.add_argument("--target", default="lab", help="a file name in params/targets/ (default: lab)")
    run.add_argument("--params", action="append", metavar="FILE", help="a YAML parameter file (repeatable)")
    run.add_argument("--run-id", help="add the phase to this existing run instead of a new one")
    run.set_defaults(func=_cmd_run)

    cmp_ = sub.add_parser("compare", help="compare two phases: each metric, its change, and whether it is noise")
    cmp_.add_argument("--baseline", required=True, metavar="RUN:PHASE", help="e.g. 20261128T...-demo:phase0, or phase0")
    cmp_.add_argument("--current", required=True, metavar="RUN:PHASE", help="e.g. phase1 (the newest run with it)")
    cmp_.add_argument("--csv", help="also write the table to this CSV file")
    cmp_.set_defaults(func=_cmd_compare)

    hist = sub.add_parser("history", help="every run's numbers, oldest first, as a table and a trend chart")
    hist.add_argument("--phase", help="only this phase, e.g. phase4 (default: every phase)")
    hist.add_argument("--metric", action="append", metavar="KEY",
                      help="a metric key to show (repeatable; default: the users' seven measured)")  # fmt: skip
    hist.add_argument("--chart", metavar="FILE", help="where to write the chart (default: <outputs>/history.png)")
    hist.add_argument("--csv", metavar="FILE", help="also write the table to this CSV file")
    hist.set_defaults(func=_cmd_history)

    gate = sub.add_parser("check", help="regression gate: exit 1 when current is worse than baseline beyond noise")
    gate.add_argument("--baseline", required=True, metavar="RUN:PHASE", help="e.g. 20261128T...-smoke:phase4")
    gate.add_argument("--current", required=True, metavar="RUN:PHASE", help="e.g. phase4 (the newest run with it)")
    gate.add_argument("--tolerance", type=float, default=10.0, metavar="PCT",
                      help="how much worse, in %% of the baseline, a metric may get (default: 10)")  # fmt: skip
    gate.add_argument("--metric", action="append", metavar="KEY", help="only this metric key (repeatable)")
    gate.set_defaults(func=_cmd_check)

    rep = sub.add_parser("report", help="render a run's HTML report (default: the newest run)")
    rep.add_argument("run_id", nargs="?", help="a run id in outputs/ or a run directory")
    rep.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ragperf`` script.

    Every error ends in one ``ragperf: <message>`` on stderr and exit code 2 (130 when interrupted),
    with ``--debug`` after its traceback. What is printed or logged has the secrets masked: the
    environment's, the lab's, and passwords written in the arguments or in any DSN or URL.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    secrets = [*_known_secrets(), *redact.secrets_in(argv)]
    redact.install_log_filter(secrets=secrets)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _print_error("interrupted", secrets, traceback.format_exc() if args.debug else "")
        return 130
    except Exception as exc:
        _print_error(_error_text(exc), secrets, traceback.format_exc() if args.debug else "")
        return 2
    finally:
        redact.uninstall_log_filter()


def _error_text(exc: Exception) -> str:
    """What went wrong; for an error not of ragperf's own classes, its kind and how to see where it came from."""
    text, kind = str(exc).strip(), type(exc).__name__
    if any(cls.__module__.split(".")[0] in OWN_PACKAGES for cls in type(exc).__mro__):
        return text or kind
    what = f"{kind}: {text}" if text else kind
    return f"{what} (not one of ragperf's own errors: `ragperf --debug ...` shows its traceback)"


def _print_error(message: str, secrets: list[str], trace: str = "") -> None:
    if trace:
        print(redact.scrub_message(trace, secrets), file=sys.stderr, end="")
    print(f"ragperf: {redact.scrub_message(message, secrets)}", file=sys.stderr)


def _known_secrets() -> list[str]:
    """The environment's secrets and the lab's passwords (its secrets.json, when this user may read it)."""
    try:
        path = lab.default_lab_dir() / "secrets.json"
        return redact.known_secrets([path] if path.is_file() and os.access(path, os.R_OK) else [])
    except (OSError, ValueError) as exc:  # a damaged or vanishing secrets.json: the environment's still count
        log.debug("cannot read the lab's secrets: %s", exc)
        return redact.known_secrets()


if __name__ == "__main__":
    sys.exit(main())
