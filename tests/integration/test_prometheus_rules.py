"""Alert rules and dashboard: promtool accepts and tests them; they name only real metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "packaging" / "prometheus" / "etcd-backup-agent.rules.yml"
RULE_TESTS = ROOT / "packaging" / "prometheus" / "tests.yml"
DASHBOARD = ROOT / "packaging" / "grafana" / "etcd-backup-agent.json"
RUNBOOKS = ROOT / "docs" / "runbooks.md"


def _exported_metrics() -> frozenset[str]:
    """Every sample name the agent's real registry exposes (plus Prometheus' own `up`)."""
    from prometheus_client.parser import text_string_to_metric_families

    from etcd_backup_agent.metrics import Metrics

    text = Metrics("c", "0").exposition().decode()
    names = {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}
    names |= {fam.name for fam in text_string_to_metric_families(text)}
    return frozenset(names | {"up"})


# Taken from the exporter itself, so rules and dashboard cannot drift from the code.
KNOWN_METRICS = _exported_metrics()

ALERTS = (
    "EtcdBackupMissing",
    "EtcdBackupFailing",
    "EtcdBackupVerificationFailed",
    "EtcdBackupStoreUnreachable",
    "EtcdBackupRetentionFailing",
    "EtcdBackupRetentionNotRunning",
    "EtcdBackupAgentAbsent",
    "EtcdBackupNoLockHolder",
    "EtcdBackupDrillStale",
    "EtcdBackupDrillFailing",
    "EtcdBackupKeyspaceGrowing",
)

# PromQL words that are not metric names: functions, aggregations, keywords.
_PROMQL_WORDS = frozenset(
    [
        "abs",
        "absent",
        "absent_over_time",
        "avg",
        "avg_over_time",
        "bool",
        "bottomk",
        "by",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "count",
        "count_over_time",
        "count_values",
        "day_of_month",
        "day_of_week",
        "delta",
        "deriv",
        "exp",
        "floor",
        "group",
        "group_left",
        "group_right",
        "histogram_quantile",
        "holt_winters",
        "idelta",
        "ignoring",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "label_values",
        "last_over_time",
        "ln",
        "log10",
        "log2",
        "max",
        "max_over_time",
        "min",
        "min_over_time",
        "offset",
        "on",
        "or",
        "and",
        "unless",
        "predict_linear",
        "quantile",
        "quantile_over_time",
        "rate",
        "resets",
        "round",
        "scalar",
        "sgn",
        "sort",
        "sort_desc",
        "sqrt",
        "stddev",
        "stdvar",
        "sum",
        "sum_over_time",
        "time",
        "timestamp",
        "topk",
        "vector",
        "without",
        "inf",
        "nan",
    ]
)


def metric_names(expr: str) -> set[str]:
    """Names used as metrics in a PromQL expression (labels, strings and functions removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text
    )  # label lists
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    tokens = set(re.findall(r"(?<![\w.])[A-Za-z_:][\w:]*", text))
    return {t for t in tokens if t.lower() not in _PROMQL_WORDS}


def rule_exprs() -> dict[str, str]:
    """alert name -> expr, read from the rules file without a YAML library."""
    exprs: dict[str, str] = {}
    blocks = re.split(r"^\s*- alert: ", RULES.read_text(), flags=re.MULTILINE)[1:]
    for block in blocks:
        name = block.split("\n", 1)[0].strip()
        m = re.search(r"^\s*expr: (\|\n(?P<body>(?:\s{10,}.*\n)+)|(?P<line>.*)$)", block, re.M)
        assert m, f"no expr in {name}"
        exprs[name] = m.group("body") or m.group("line")
    return exprs


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    out: list[str] = []

    def walk(panels: list[dict[str, object]]) -> None:
        for p in panels:
            for t in p.get("targets", []):  # type: ignore[attr-defined]
                out.append(t["expr"])
            walk(p.get("panels", []))  # type: ignore[arg-type]

    walk(dash["panels"])
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", var["definition"])
            assert m, var["definition"]
            out.append(m.group(1))
    return out


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool missing: run `make setup` (Debian package prometheus)")
    return path


@pytest.mark.integration
def test_promtool_check_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


@pytest.mark.integration
def test_promtool_unit_tests_pass() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", str(RULE_TESTS)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    text = RULE_TESTS.read_text()
    assert set(rule_exprs()) == set(ALERTS)
    for alert in ALERTS:
        cases = re.findall(
            rf"alertname: {alert}\n\s+exp_alerts:(?P<exp> \[\]|\n)", text, flags=re.MULTILINE
        )
        assert " []" in cases, f"{alert}: no case where it must stay silent"
        assert "\n" in cases, f"{alert}: no case where it must fire"


@pytest.mark.integration
def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """Loosen one rule: its test must now fail, so the suite above protects behaviour."""
    shutil.copy(RULE_TESTS, tmp_path / "tests.yml")
    rules = RULES.read_text().replace("> 2 * max by (cluster)", "> 4 * max by (cluster)")
    assert rules != RULES.read_text()
    (tmp_path / RULES.name).write_text(rules)
    result = subprocess.run(
        [promtool(), "test", "rules", str(tmp_path / "tests.yml")],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "EtcdBackupMissing" in result.stdout + result.stderr


def test_alerts_have_summary_description_and_a_runbook_anchor() -> None:
    text = RULES.read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#{1,6} (.+)$", RUNBOOKS.read_text(), flags=re.MULTILINE)
    }
    blocks = re.split(r"^\s*- alert: ", text, flags=re.MULTILINE)[1:]
    assert len(blocks) == len(ALERTS)
    for block in blocks:
        name = block.split("\n", 1)[0].strip()
        assert re.search(r"^\s+summary: ", block, re.M), name
        assert re.search(r"^\s+description: ", block, re.M), name
        assert re.search(r"^\s+severity: (critical|warning)$", block, re.M), name
        m = re.search(r'runbook_url: "docs/runbooks\.md#([a-z0-9-]+)"', block)
        assert m, f"{name}: runbook_url must point at docs/runbooks.md#<anchor>"
        assert m.group(1) == name.lower(), name
        assert m.group(1) in headings, f"{name}: docs/runbooks.md has no heading #{m.group(1)}"


def test_rules_use_only_known_metrics() -> None:
    for name, expr in rule_exprs().items():
        unknown = metric_names(expr) - KNOWN_METRICS
        assert not unknown, f"{name} uses unknown metrics {sorted(unknown)}"
    # comments and annotations too: any etcd_backup_* name anywhere must be known
    mentioned = set(re.findall(r"\betcd_backup_\w+", RULES.read_text()))
    assert mentioned <= KNOWN_METRICS, sorted(mentioned - KNOWN_METRICS)


def test_dashboard_uses_only_known_metrics() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) > 10
    used: set[str] = set()
    for expr in exprs:
        used |= metric_names(expr)
    assert used <= KNOWN_METRICS, sorted(used - KNOWN_METRICS)
    for needed in (
        "etcd_backup_last_success_timestamp_seconds",
        "etcd_backup_runs_total",
        "etcd_backup_duration_seconds_bucket",
        "etcd_backup_snapshot_size_bytes",
        "etcd_backup_stored_size_bytes",
        "etcd_backup_stored_backups",
        "etcd_backup_drill_last_success_timestamp_seconds",
        "etcd_backup_drills_total",
        "etcd_backup_keyspace_bytes",
        "etcd_backup_keyspace_history_bytes",
    ):
        assert needed in used, f"dashboard lacks a panel on {needed}"


def test_metric_name_check_can_fail() -> None:
    assert metric_names('sum by (cluster) (rate(etcd_backups_runs_total{result="x"}[5m]))') == {
        "etcd_backups_runs_total"
    }
    assert metric_names("histogram_quantile(0.9, sum by (le) (rate(x_bucket[1m])))") == {"x_bucket"}


@pytest.mark.integration
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses every dashboard query (as recording rules; variables substituted)."""
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(dashboard_exprs()):
        concrete = expr.replace("$cluster", ".*").replace("$__rate_interval", "5m")
        lines += [f"      - record: dashboard:query_{i}", f"        expr: {json.dumps(concrete)}"]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_structure() -> None:
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    names = [v["name"] for v in dash["templating"]["list"]]
    assert names == ["datasource", "cluster"]
    for p in dash["panels"]:
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
