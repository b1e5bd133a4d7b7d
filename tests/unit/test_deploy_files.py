"""deploy/: the Prometheus alert rules and the Grafana dashboard load, and name only metrics (and labels) that
onguard's Metrics really exports; the dashboard shows every one of them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from onguard.ops.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
METRIC = re.compile(r"\bonguard_[a-z_]+")
SELECTOR = re.compile(r"\b(onguard_[a-z_]+)\{([^}]*)\}")
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "info": ("_info",)}


def exported() -> dict[str, set[str]]:
    """Every sample name a scrape can show → the label names it carries."""
    names: dict[str, set[str]] = {}
    metrics = Metrics()
    metrics.declare(policies={"p": "high"}, actions=["a"], channels=["c"])
    metrics.guardian_balance("0x0", 1, floor_wei=1)
    metrics.endpoint_health("e", True)
    for family in metrics.registry.collect():
        labels = {key for sample in family.samples for key in sample.labels}
        for suffix in SUFFIXES[family.type]:
            names[family.name + suffix] = labels
    return names


def families() -> dict[str, str]:
    return {family.name: family.type for family in Metrics().registry.collect()}


def check_expression(expr: str, known: dict[str, set[str]]) -> None:
    used = set(METRIC.findall(expr))
    assert used, f"no onguard metric in {expr!r}"
    for name in used:
        assert name in known, f"{name} (in {expr!r}) is not exported by onguard.ops.metrics.Metrics"
    for name, matchers in SELECTOR.findall(expr):
        for label in re.findall(r"([a-z_]+)\s*[=!]~?", matchers):
            assert label in known[name], f"{name} has no label {label!r} (in {expr!r})"


def alert_rules() -> list[dict]:
    document = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_alert_rules_are_complete_and_name_only_exported_metrics() -> None:
    known = exported()
    rules = alert_rules()
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        if rule["alert"] != "OnguardDown":  # Prometheus' own `up` series
            check_expression(rule["expr"], known)
    names = {rule["alert"] for rule in rules}
    assert names >= {"OnguardHeadLag", "OnguardGuardianBalanceLow", "OnguardResponseFailed",
                     "OnguardNotificationsFailing", "OnguardEndpointDown", "OnguardNotReady"}
    assert len(names) == len(rules)


def test_the_dashboard_names_only_exported_metrics_and_shows_every_one() -> None:
    known = exported()
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] if panel["type"] != "row"
                   for target in panel["targets"]]
    for expr in expressions:
        check_expression(expr, known)
    shown = {name for expr in expressions for name in METRIC.findall(expr)}
    for family, kind in families().items():
        assert any(family + suffix in shown for suffix in SUFFIXES[kind]), f"no panel shows {family}"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_checks_catch_a_metric_that_does_not_exist() -> None:
    known = exported()
    for wrong in ("onguard_head_lag_seconds > 5", 'onguard_responses_total{result="failed"}'):
        try:
            check_expression(wrong, known)
        except AssertionError:
            continue
        raise AssertionError(f"{wrong!r} passed the check")
