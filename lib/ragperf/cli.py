"""The ``ragperf`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ragperf import lab, labdb, pginstall


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
    if info["corpus"]:
        c = info["corpus"]
        print(
            f"  corpus   {c.get('chunks')} chunks loaded in {c.get('load_seconds')} s, {c.get('questions')} questions"
        )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one sub-command per verb."""
    parser = argparse.ArgumentParser(prog="ragperf", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ragperf`` script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except (lab.LabError, pginstall.InstallError, RuntimeError) as exc:
        print(f"ragperf: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
