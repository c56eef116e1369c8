"""Finding a run's target: the lab (brought up when it is not) or the deployment its parameters describe."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from ragperf import lab
from ragperf.core.params import Params
from ragperf.core.target import Target, TargetError

log = logging.getLogger(__name__)


def resolve_target(
    params: Params, *, bring_up: bool = True, same_profile: bool = True, lab_dir: Path | None = None
) -> Target:
    """The lab (in ``lab_dir``, by default :func:`ragperf.lab.default_lab_dir`; brought up with the run's
    profile when it is not) or the deployment of the parameters.

    ``bring_up=False`` fails instead of starting the lab; ``same_profile=False`` takes the lab up with
    whichever profile it has (to undo changes, not to measure)."""
    if params.target.kind == "deployment":
        dsn = params.target.dsn
        return Target("deployment", params.target.base_url.rstrip("/"), dsn, params.db_password() if dsn else None,
                      collection=params.target.collection, app_role=params.changes.app_role)  # fmt: skip
    lab_dir = lab_dir or lab.default_lab_dir()
    info = lab.status(lab_dir)
    if not info["up"] or (same_profile and info["profile"] != params.profile):
        if not bring_up:
            raise TargetError(f"the lab in {lab_dir} is not up with the {params.profile} profile: run `ragperf lab up`")
        log.info("bringing the lab up (%s profile)", params.profile)
        lab.up(params.profile, lab_dir=lab_dir)
        info = lab.status(lab_dir)
    creds = lab.credentials(lab_dir)
    corpus = info["corpus"] or {}
    servers = {
        "postgresql": info.get("postgres"),
        "llm_provider": info["llm_base_url"],
        "corpus": {k: v for k, v in corpus.items() if k != "questions_file"},
        "legacy_app": "ragperf_lab.legacy.app (frozen)",
    }
    return Target(
        "lab",
        str(info["app_url"]),
        str(info["admin_dsn"]),
        SecretStr(creds.superuser_password),
        lab_dir,
        Path(corpus["questions_file"]) if corpus.get("questions_file") else None,
        servers,
        collection=lab.COLLECTION,
        app_role=params.changes.app_role or lab.APP_ROLE,
        restart=functools.partial(lab.restart_postgres, lab_dir),
    )


def check_reachable(target: Target, timeout_s: float = 10.0) -> dict[str, Any]:
    """``GET /health`` of the service; raise :class:`TargetError` saying what failed."""
    url = f"{target.base_url}/health"
    try:
        response = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise TargetError(f"the service at {target.base_url} is not reachable ({type(exc).__name__}: {exc})") from None
    if response.status_code != 200:
        raise TargetError(f"{url} answered HTTP {response.status_code}: {response.text[:200]}")
    return response.json() if "json" in response.headers.get("content-type", "") else {"body": response.text[:200]}
