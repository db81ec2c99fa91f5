"""docker-compose.yml read statically: GPU serve, train profile into the same volume, monitoring, and the
secure defaults (required secrets, hardened containers, nothing published that needs no publishing)."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from contract import METRIC_FAMILIES
from deploy_files import ROOT, command_exists, parse_dockerfile


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with an empty environment."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))


def required_variable(value: str) -> str | None:
    """VAR when ``value`` is exactly ``${VAR:?message}`` (compose refuses to run while VAR is unset or empty)."""
    match = re.fullmatch(r"\$\{(\w+):\?[^}]+\}", str(value))
    return match[1] if match else None


def tmpfs_paths(service: dict) -> set[str]:
    return {spec.split(":")[0] for spec in service.get("tmpfs", [])}


def mounts(service: dict) -> dict[str, str]:
    """Mount target -> source for the service's short-syntax volumes."""
    result = {}
    for spec in service.get("volumes", []):
        source, target, *_ = spec.split(":")
        result[target] = source
    return result


def gpu_devices(service: dict) -> list[dict]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def test_serve_reserves_an_nvidia_gpu(services):
    devices = gpu_devices(services["serve"])
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_serve_is_the_default_service_with_port_health_and_restart(services):
    serve = services["serve"]
    assert "profiles" not in serve, "`docker compose up` must start serve"
    assert any(interpolate(p).endswith(":8000") for p in serve["ports"])
    test = " ".join(serve["healthcheck"]["test"])
    assert "/health" in test and ":8000" in test
    assert serve["restart"] in ("always", "unless-stopped", "on-failure")


def test_serve_settings_come_from_the_environment(services):
    environment = services["serve"]["environment"]
    assert all(key.startswith("RESNET_SERVE_") or key == "HOME" for key in environment)
    assert environment["RESNET_SERVE_WEIGHTS_DIR"] in mounts(services["serve"])
    assert interpolate(environment["RESNET_SERVE_PORT"]) == "8000"


def test_stop_grace_covers_the_request_deadline(services):
    serve = services["serve"]
    grace = int(serve["stop_grace_period"].rstrip("s"))
    timeout = float(interpolate(serve["environment"]["RESNET_SERVE_TIMEOUT_S"]))
    assert grace > timeout, "in-flight requests must be able to finish before SIGKILL"


def test_train_is_a_profile_writing_into_the_volume_serve_reads(services, compose):
    train, serve = services["train"], services["serve"]
    assert "train" in train["profiles"]
    weights_dir = serve["environment"]["RESNET_SERVE_WEIGHTS_DIR"]
    serve_source = mounts(serve)[weights_dir]
    assert serve_source in compose["volumes"], "a named volume, shared by both services"
    command = [interpolate(part) for part in train["command"]]
    output_dir = next(a.split("=", 1)[1] for a in command if a.startswith("--output-dir"))
    assert mounts(train)[output_dir] == serve_source
    assert any(d.get("driver") == "nvidia" for d in gpu_devices(train))
    assert train["image"] == serve["image"], "one image for serving and training"


def test_every_command_is_a_console_script(services, console_scripts):
    for name in ("serve", "train"):
        command = services[name].get("command")
        if command is None:
            continue  # the image's CMD, checked in test_dockerfile
        argv = command if isinstance(command, list) else command.split()
        assert command_exists(argv, console_scripts) is None, name
    health = services["serve"]["healthcheck"]["test"]
    assert command_exists(health[1:], console_scripts) is None


def test_monitoring_profile_scrapes_metrics(services):
    for name in ("prometheus", "grafana"):
        assert "monitoring" in services[name]["profiles"]
    config_mount = next(v for v in services["prometheus"]["volumes"] if "prometheus.yml" in v)
    config = yaml.safe_load((ROOT / config_mount.split(":")[0]).read_text())
    jobs = config["scrape_configs"]
    assert any(
        job.get("metrics_path", "/metrics") == "/metrics"
        and any("serve:8000" in t for sc in job["static_configs"] for t in sc["targets"])
        for job in jobs
    )


def test_grafana_provisions_prometheus_and_the_dashboard(services):
    sources = {v.split(":")[1]: ROOT / v.split(":")[0] for v in services["grafana"]["volumes"]}
    provisioning = sources["/etc/grafana/provisioning"]
    datasources = yaml.safe_load(next((provisioning / "datasources").glob("*.yml")).read_text())
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load(next((provisioning / "dashboards").glob("*.yml")).read_text())["providers"]
    dashboards_dir = providers[0]["options"]["path"]
    assert dashboards_dir in sources
    assert any(sources[dashboards_dir].glob("*.json"))


def test_dashboard_queries_only_real_metrics_and_covers_each_family():
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/resnet-serve.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = set()
    for expr in exprs:
        for name in re.findall(r"\bresnet_serve_\w+", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert base in METRIC_FAMILIES, f"dashboard queries {name}, which the service does not export"
            used.add(base)
    assert used == METRIC_FAMILIES, f"no panel for {METRIC_FAMILIES - used}"
    text = " ".join(exprs)
    for quantile in ("0.5", "0.9", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le) (rate(resnet_serve_request_duration_seconds_bucket" in text
    datasource_uid = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ][0]["uid"]
    assert all(panel["datasource"]["uid"] == datasource_uid for panel in dashboard["panels"])


@pytest.mark.parametrize("name", ["serve", "train", "prometheus", "grafana"])
def test_every_service_is_hardened(services, name):
    service = services[name]
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"] and "cap_add" not in service
    assert "no-new-privileges:true" in service["security_opt"]
    assert not service.get("privileged", False)
    assert re.fullmatch(r"\d+[kmg]", interpolate(service["mem_limit"])), "a memory limit"


@pytest.mark.parametrize("name", ["serve", "train"])
def test_scratch_space_is_a_tmpfs(services, name):
    service = services[name]
    assert "/tmp" in tmpfs_paths(service)
    home = service["environment"]["HOME"]
    assert home in tmpfs_paths(service), "caches under HOME need a writable place on a read-only root"


def test_the_api_key_is_required_from_the_environment(services):
    assert required_variable(services["serve"]["environment"]["RESNET_SERVE_API_KEY"]) == "RESNET_SERVE_API_KEY"
    assert "RESNET_SERVE_API_KEY" not in services["train"].get("environment", {})


def test_grafana_has_no_anonymous_access_and_no_default_password(services):
    environment = services["grafana"]["environment"]
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in environment
    assert required_variable(environment["GF_SECURITY_ADMIN_PASSWORD"]) == "GF_SECURITY_ADMIN_PASSWORD"


def test_prometheus_is_not_published_on_the_host(services):
    assert "ports" not in services["prometheus"]
    assert "network_mode" not in services["prometheus"]


def test_serve_only_reads_the_weights_and_train_writes_them_as_their_owner(services):
    serve_weights = next(v for v in services["serve"]["volumes"] if v.split(":")[1] == "/app/weights")
    assert serve_weights.endswith(":ro")
    runtime = parse_dockerfile((ROOT / "Dockerfile").read_text())
    chowns = [ins.value for ins in runtime if ins.keyword == "RUN" and "/app/weights" in ins.value]
    owner = re.search(r"chown (\d+):(\d+) /app/weights", " ".join(chowns))
    assert owner, "the Dockerfile gives the weights directory to the training user"
    assert services["train"]["user"] == f"{owner[1]}:{owner[2]}"
    user = next(ins.value for ins in reversed(runtime) if ins.keyword == "USER")
    assert services["train"]["user"] != user and "user" not in services["serve"]
