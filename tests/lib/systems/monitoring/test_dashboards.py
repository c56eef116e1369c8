"""The panels: one definition, drawn in the notebook and written as Grafana provisioning files.

That every panel's expression returns data from a live Prometheus is proven on the lab, in
tests/lib/systems/monitoring/test_stack.py.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from ragperf.systems.monitoring import dashboards


def test_every_dashboard_is_grafana_json_with_its_panels_expressions(tmp_path):
    written = dashboards.write_provisioning(tmp_path, "http://127.0.0.1:9090")
    boards = sorted((tmp_path / "dashboards").glob("*.json"))
    assert len(boards) == len(dashboards.DASHBOARDS) and set(boards) <= set(written)
    expressions = set()
    for path in boards:
        model = json.loads(path.read_text())
        assert model["uid"].startswith("ragperf-") and model["schemaVersion"] >= 36 and model["panels"]
        ids = [panel["id"] for panel in model["panels"]]
        assert len(ids) == len(set(ids))
        for panel in model["panels"]:
            assert panel["type"] == "timeseries" and panel["title"] and panel["targets"]
            assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
            assert panel["fieldConfig"]["defaults"]["unit"]
            for target in panel["targets"]:
                assert target["refId"] and target["expr"] and "{{" not in target["expr"]
                assert target["datasource"]["uid"] == dashboards.DATASOURCE_UID
                expressions.add(target["expr"])
    assert expressions == {expr for panel in dashboards.PANELS for _, expr in panel.series}
    provider = yaml.safe_load((tmp_path / "provisioning/dashboards/ragperf.yaml").read_text())
    assert provider["apiVersion"] == 1 and provider["providers"][0]["options"]["path"] == str(tmp_path / "dashboards")
    source = yaml.safe_load((tmp_path / "provisioning/datasources/ragperf.yaml").read_text())
    assert source["datasources"][0]["type"] == "prometheus" and source["datasources"][0]["url"].endswith(":9090")


def test_label_legends_become_grafana_templates_and_rate_windows_are_filled_in():
    panel = next(p for p in dashboards.PANELS if p.legend_label == "state")
    model = dashboards.grafana_dashboard(panel.dashboard)
    target = next(t for p in model["panels"] if p["title"] == panel.title for t in p["targets"])
    assert target["legendFormat"] == "{{state}}"
    expr = dashboards.PANELS[0].series[0][1]
    assert dashboards.RATE in expr and dashboards.expression(expr, 7.2).count("[8s]") == expr.count(dashboards.RATE)
    with pytest.raises(ValueError, match="allowed are service"):
        dashboards.panels("grafana")


def test_panel_frames_and_coverage_say_which_panels_have_data():
    asked = []

    def query_range(expr, start, end, step):
        asked.append(expr)
        if "pg_connections_count" in expr:
            times = pd.to_datetime([start, start + step], unit="s", utc=True)
            return pd.DataFrame({"time": times, "value": [3.0, 4.0], "state": ["active", "idle"]})
        return pd.DataFrame(columns=["time", "value"])

    frames = dashboards.panel_frames(query_range, 1000.0, 1060.0, 8.0, 2.0, only=["postgres"])
    assert set(frames) == {p.title for p in dashboards.panels("postgres")}
    assert all("$__rate_interval" not in expr for expr in asked)
    connections = frames["Connections by state"]
    assert list(connections["series"]) == ["active", "idle"]
    table = dashboards.coverage(frames).set_index("panel")
    assert table.loc["Connections by state", "has data"] and not table.loc["Checkpoints", "has data"]
    fig = dashboards.chart(frames, "postgres", marks=[("step", 1000.0, 1030.0)], origin=1000.0)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == len(frames)
