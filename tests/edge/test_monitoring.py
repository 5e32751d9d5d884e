"""Prometheus and Grafana in the stack: the scrape config is valid for promtool and aims at
every edge task's /_edge/metrics; the provisioned Grafana dashboard uses the provisioned
data source, valid PromQL (promtool checks each query as a rule) and only metric names a
real edge exposes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.deploy.helpers import REPO, load_stack, need_tool
from tests.edge.conftest import EdgeFactory, Scripted, url

PROMETHEUS = REPO / "config" / "prometheus" / "prometheus.yml"
GRAFANA = REPO / "config" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "woody-edge.json"
DATASOURCE = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDER = GRAFANA / "provisioning" / "dashboards" / "woody.yml"
FUNCTIONS = {"sum", "rate", "count", "histogram_quantile", "by", "le", "label_values"}


def expressions() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_promtool_accepts_the_scrape_config() -> None:
    promtool = need_tool("promtool")
    done = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_scrapes_each_edge_task_where_the_stack_listens() -> None:
    scrape = yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]
    job = next(j for j in scrape if j["job_name"] == "woody-edge")
    assert job["metrics_path"] == "/_edge/metrics"
    sd = job["dns_sd_configs"][0]
    assert sd["names"] == ["tasks.edge"] and sd["type"] == "A"
    edge = load_stack()["services"]["edge"]
    command = edge["command"]
    assert command[command.index("--port") + 1] == str(sd["port"])


def test_the_stack_mounts_what_grafana_and_prometheus_read() -> None:
    stack = load_stack()
    files = {name: c["file"] for name, c in stack["configs"].items()}
    prom = stack["services"]["prometheus"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    assert any(v.startswith("prometheus-data:") for v in prom["volumes"])
    assert "prometheus-data" in stack["volumes"]
    mounts = {
        c["target"]: files[c["source"]]
        for svc in ("prometheus", "grafana")
        for c in stack["services"][svc]["configs"]
    }
    for target, file in mounts.items():
        assert (REPO / file).is_file(), file
        assert Path(file).name == Path(target).name or target.endswith(Path(file).suffix)
    provider = yaml.safe_load(PROVIDER.read_text())["providers"][0]
    assert f"{provider['options']['path']}/woody-edge.json" in mounts
    grafana_env = stack["services"]["grafana"]["environment"]
    assert grafana_env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] in mounts
    source = yaml.safe_load(DATASOURCE.read_text())["datasources"][0]
    assert source["url"] == "http://prometheus:9090"


def test_the_dashboard_uses_the_provisioned_data_source() -> None:
    dash = json.loads(DASHBOARD.read_text())
    uid = yaml.safe_load(DATASOURCE.read_text())["datasources"][0]["uid"]
    assert dash["uid"] == "woody-edge" and dash["panels"]
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert all(t["datasource"]["uid"] == uid for t in panel["targets"]), panel["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = need_tool("promtool")
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": e.replace("$node", ".*")}
                    for i, e in enumerate(expressions())
                ],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def test_every_metric_the_dashboard_names_is_exposed(
    make_edge: EdgeFactory, scripted: tuple[Scripted, Any]
) -> None:
    _, server = scripted
    edge = await make_edge(url(server, ""))
    async with aiohttp.ClientSession() as s, s.get(url(edge, "/_edge/metrics")) as r:
        text = await r.text()
    exposed = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):  # a family, even one with no sample yet
            _, _, name, kind = line.split()
            suffixes = ("_bucket", "_sum", "_count") if kind == "histogram" else ("",)
            exposed |= {name + suffix for suffix in suffixes}
    named = set()
    for expr in expressions():
        for name in re.findall(r"\b(edge_[a-z_]+)\b", expr):
            named.add(name)
    assert named and named <= exposed, named - exposed
