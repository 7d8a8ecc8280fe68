"""The deployment files (deploy/): alert rules checked and unit-tested by promtool, every PromQL
query of the Grafana dashboard parsed by promtool, the Prometheus config checked, and the
Kubernetes manifests, compose file and Dockerfile checked for what they must agree on with each
other and with lmforge (issue 32)."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ROOT = DEPLOY.parent
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and os.environ.get("LMFORGE_REQUIRE_BROWSER") != "1",  # .ci/run: required there
    reason="no promtool (install.sh installs Debian's prometheus package)",
)


def promtool(*args: str, cwd: Path = DEPLOY / "prometheus") -> str:
    done = subprocess.run([PROMTOOL or "promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@needs_promtool
def test_alert_rules_check_and_fire_on_their_series():
    assert "SUCCESS: 5 rules found" in promtool("check", "rules", "alerts.yml")
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


@needs_promtool
def test_every_dashboard_query_parses(tmp_path):
    dashboard = json.loads((DEPLOY / "grafana" / "lmforge.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 8
    rules = {
        "groups": [
            {"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)]}
        ]
    }
    (tmp_path / "q.yml").write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(exprs)} rules found" in promtool("check", "rules", "q.yml", cwd=tmp_path)
    served = {
        "lmforge_requests_total",
        "lmforge_request_seconds_bucket",
        "lmforge_queue_depth",
        "lmforge_in_flight",
        "lmforge_tokens_in_total",
        "lmforge_tokens_out_total",
        "lmforge_batch_size_sum",
        "lmforge_batch_size_count",
    }
    used = {m for e in exprs for m in re.findall(r"lmforge_[a-z_]+", e)}
    assert used <= served, used - served  # only metrics the server exports


@needs_promtool
def test_the_prometheus_config_checks(tmp_path):
    text = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    (tmp_path / "key").write_text("k")
    text = text.replace("/etc/prometheus/alerts.yml", str(DEPLOY / "prometheus" / "alerts.yml"))
    text = text.replace("/run/secrets/lmforge_api_key", str(tmp_path / "key"))
    (tmp_path / "prometheus.yml").write_text(text)
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml", cwd=tmp_path)


def test_the_server_exports_what_the_alerts_read():
    from lmforge.serving.metrics import Metrics

    metrics = Metrics()
    metrics.requests.labels("/v1/classify", "200").inc()
    metrics.latency.labels("/v1/classify").observe(0.1)
    metrics.queue("m", 1)
    exported = metrics.render()[0].decode()
    for name in re.findall(r"lmforge_[a-z_]+", (DEPLOY / "prometheus" / "alerts.yml").read_text()):
        assert re.search(rf"^{name}[{{ ]", exported, re.M), name


def test_the_manifests_agree_with_each_other_and_with_the_server():
    docs = [d for f in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    for d in docs:
        assert d["apiVersion"] and d["metadata"]["name"] == "lmforge"
    deploy = kinds["Deployment"]
    pod = deploy["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"] == labels
    assert kinds["Service"]["spec"]["selector"] == labels
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    (container,) = pod["spec"]["containers"]
    args = container["args"]
    drain = float(args[args.index("--drain-timeout") + 1])
    assert pod["spec"]["terminationGracePeriodSeconds"] > drain  # in-flight requests finish
    for probe in ("readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]  # a liveness probe that does not fail while draining
    assert "httpGet" not in container["livenessProbe"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"]
    assert all(e["name"] != "LMFORGE_API_KEY" or "valueFrom" in e for e in container["env"])  # from a Secret
    assert "--api-key" not in args  # never on argv
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    metrics = {m["type"]: m for m in hpa["metrics"]}
    assert (
        metrics["Resource"]["resource"]["name"] == "cpu"
        and metrics["Pods"]["pods"]["metric"]["name"] == "lmforge_queue_depth"
    )
    from lmforge.serving.settings import ServeSettings

    assert [a for a in args if a.startswith("--")] and all(
        a[2:].replace("-", "_") in ServeSettings.__dataclass_fields__ for a in args if a.startswith("--")
    )


def test_compose_and_the_dockerfile_match_the_set_up():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert set(compose["services"]) == {"lmforge", "prometheus", "grafana"}
    assert "--api-keys" in compose["services"]["lmforge"]["command"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    install = (ROOT / "install.sh").read_text()
    for pin in re.findall(r'"(torch==[\d.]+|llama-cpp-python==[\d.]+)"', install):
        assert pin in dockerfile, pin
    assert re.search(r"^USER 10001$", dockerfile, re.M) and "HF_HUB_OFFLINE=1" in dockerfile
    ignored = (ROOT / ".gitignore").read_text()
    assert "deploy/api_key.txt" in ignored and "deploy/keys.yaml" in ignored  # secrets are never committed


@pytest.mark.parametrize("version", ["1.29.0", "1.37.0"])  # the oldest Kubernetes supported, and the newest
def test_the_manifests_validate_against_the_kubernetes_schemas(version):
    """Every object of deploy/k8s against the Kubernetes API's own JSON schemas (the
    kubernetes-validate package carries them; strict: an unknown field fails)."""
    validate = pytest.importorskip("kubernetes_validate")
    objects = [doc for path in sorted((DEPLOY / "k8s").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())]
    kinds = sorted(doc["kind"] for doc in objects if doc)
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    for doc in objects:
        validate.validate(doc, version, strict=True)
    deployment = next(doc for doc in objects if doc["kind"] == "Deployment")
    typo = json.loads(json.dumps(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(validate.ValidationError):  # the check can fail
        validate.validate(typo, version, strict=True)
