"""Finding a deployment's target from its parameters, and a service that does not answer named by its URL."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ragperf.core import params, procs
from ragperf.core.target import Target, TargetError
from ragperf.runs.targets import check_reachable, resolve_target


def _deployment(tmp_path: Path, **changes: object) -> params.Params:
    path = tmp_path / "deployment.yaml"
    data = {
        "target": {
            "kind": "deployment",
            "base_url": "http://10.0.0.5:8000/",
            "dsn": "host=10.0.0.5 dbname=rag user=ops",
            "collection": "bidding_docs",
        },
        "changes": changes,
    }
    path.write_text(yaml.safe_dump(data))
    return params.load("smoke", "lab", [path])


def test_a_deployment_target_comes_from_its_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RAGPERF_PGPASSWORD", "from-the-env")
    target = resolve_target(_deployment(tmp_path, app_role="rag_app"), bring_up=False)
    assert target.kind == "deployment"
    assert target.base_url == "http://10.0.0.5:8000"  # the trailing slash stripped
    assert target.admin_dsn == "host=10.0.0.5 dbname=rag user=ops"
    assert target.collection == "bidding_docs" and target.app_role == "rag_app"
    assert target.connect_kwargs() == {"password": "from-the-env"}
    assert target.lab_dir is None and target.restart is None  # a deployment is never restarted from here
    assert "from-the-env" not in repr(target)


def test_a_deployment_without_an_app_role_or_password_has_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("RAGPERF_PGPASSWORD", raising=False)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    target = resolve_target(_deployment(tmp_path), bring_up=False)
    assert target.app_role is None and target.password is None and target.connect_kwargs() == {}


def test_nothing_listening_is_an_error_naming_the_url():
    url = f"http://127.0.0.1:{procs.free_port()}"
    with pytest.raises(TargetError, match="is not reachable") as err:
        check_reachable(Target("deployment", url), timeout_s=2)
    assert url in str(err.value)


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200
    body = b'{"status": "ok"}'
    content_type = "application/json"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(self.status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def service() -> Iterator[tuple[str, type[_Health]]]:
    handler = type("Handler", (_Health,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_a_healthy_service_gives_its_health(service: tuple[str, type[_Health]]):
    url, _ = service
    assert check_reachable(Target("deployment", url)) == {"status": "ok"}


def test_a_health_page_that_is_not_json_is_given_as_its_body(service: tuple[str, type[_Health]]):
    url, handler = service
    handler.body, handler.content_type = b"OK", "text/plain"
    assert check_reachable(Target("deployment", url)) == {"body": "OK"}


def test_an_unhealthy_service_is_an_error_naming_the_url_and_the_status(service: tuple[str, type[_Health]]):
    url, handler = service
    handler.status, handler.body = 503, json.dumps({"detail": "database down"}).encode()
    with pytest.raises(TargetError) as err:
        check_reachable(Target("deployment", url))
    assert f"{url}/health answered HTTP 503" in str(err.value) and "database down" in str(err.value)
