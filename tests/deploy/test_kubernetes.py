"""deploy/kubernetes read statically, and each built-in resource validated against the Kubernetes
OpenAPI schema (kubernetes-validate bundles the schemas; no cluster, no network)."""

from __future__ import annotations

import re

import pytest
import yaml
from deploy_files import ROOT, command_exists

BASE = ROOT / "deploy/kubernetes"


def load(path):
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def kustomization() -> dict:
    return yaml.safe_load((BASE / "kustomization.yaml").read_text())


@pytest.fixture(scope="module")
def resources(kustomization) -> dict[str, dict]:
    """kind -> resource, from the files the kustomization lists."""
    result = {}
    for name in kustomization["resources"]:
        for doc in load(BASE / name):
            assert doc["kind"] not in result, f"two {doc['kind']}s"
            result[doc["kind"]] = doc
    return result


@pytest.fixture(scope="module")
def pod(resources) -> dict:
    return resources["Deployment"]["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod) -> dict:
    (container,) = pod["spec"]["containers"]
    return container


def port_number(container, port) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == port)


def settings(kustomization) -> dict[str, str]:
    (generator,) = kustomization["configMapGenerator"]
    return dict(literal.split("=", 1) for literal in generator["literals"])


def test_every_listed_resource_exists_and_validates_against_the_schema(kustomization):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for name in kustomization["resources"]:
        for doc in load(BASE / name):
            # strict: unknown fields (a typo such as `readinesProbe`) are errors, not ignored.
            kubernetes_validate.validate(doc, "1.33.0", strict=True)


def test_schema_validation_catches_a_broken_manifest(resources):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    broken = yaml.safe_load(yaml.safe_dump(resources["Deployment"]))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.33.0", strict=True)


def test_deployment_requests_a_gpu(container):
    resources = container["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
    assert (
        resources["requests"].get("nvidia.com/gpu", resources["limits"]["nvidia.com/gpu"])
        == (resources["limits"]["nvidia.com/gpu"])
    ), "extended resources: request must equal limit"


def test_probes_ready_and_health_on_the_serving_port(container):
    serving_port = container["ports"][0]["containerPort"]
    assert "--port" in container["args"]
    assert int(container["args"][container["args"].index("--port") + 1]) == serving_port
    readiness, liveness = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert readiness["path"] == "/ready"
    assert liveness["path"] == "/health"
    assert port_number(container, readiness["port"]) == serving_port
    assert port_number(container, liveness["port"]) == serving_port
    if "startupProbe" in container:
        assert container["startupProbe"]["httpGet"]["path"] == "/health"


def test_prestop_drain_fits_the_grace_period(pod, container, kustomization):
    """preStop sleep (endpoints update) + drain grace + the longest in-flight request < grace period."""
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    sleep = float(command[1])
    env = settings(kustomization)
    drain = sleep + float(env.get("RESNET_SERVE_DRAIN_GRACE_S", 0)) + float(env["RESNET_SERVE_TIMEOUT_S"])
    assert sleep > 0 and drain < pod["spec"]["terminationGracePeriodSeconds"]


def test_command_is_a_console_script(container, console_scripts):
    assert command_exists(container["command"] + container.get("args", []), console_scripts) is None


def test_settings_reach_the_container(container, kustomization):
    (generator,) = kustomization["configMapGenerator"]
    refs = [source["configMapRef"]["name"] for source in container["envFrom"]]
    assert generator["name"] in refs
    assert all(key.startswith("RESNET_SERVE_") for key in settings(kustomization))


def test_weights_come_from_a_volume(pod, container, resources):
    mount = next(m for m in container["volumeMounts"] if m["name"] == "weights")
    assert container["args"][container["args"].index("--weights-dir") + 1] == mount["mountPath"]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "weights")
    assert volume["persistentVolumeClaim"]["claimName"] == resources["PersistentVolumeClaim"]["metadata"]["name"]


def test_service_selects_the_pods_and_targets_the_serving_port(resources, pod, container):
    service, deployment = resources["Service"], resources["Deployment"]
    selector = service["spec"]["selector"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert port_number(container, port["targetPort"]) == container["ports"][0]["containerPort"]


def test_hpa_targets_the_deployment(resources):
    hpa, deployment = resources["HorizontalPodAutoscaler"], resources["Deployment"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_prometheus_scrapes_metrics(pod, container):
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]
    overlay = ROOT / "deploy/kubernetes/prometheus-operator"
    resources = yaml.safe_load((overlay / "kustomization.yaml").read_text())["resources"]
    assert ".." in resources
    (monitor,) = [doc for name in resources if name != ".." for doc in load(overlay / name)]
    assert monitor["kind"] == "ServiceMonitor"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["endpoints"][0]["port"] == container["ports"][0]["name"]


def test_image_is_set_by_kustomize(container, kustomization):
    names = {image["name"] for image in kustomization["images"]}
    assert re.sub(r":.*$", "", container["image"]) in names


def test_weights_loader_mounts_the_same_claim_outside_the_kustomization(kustomization, resources):
    (loader,) = load(BASE / "weights-loader.yaml")
    assert "weights-loader.yaml" not in kustomization["resources"]
    (volume,) = loader["spec"]["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == resources["PersistentVolumeClaim"]["metadata"]["name"]
    assert "ReadWriteMany" in resources["PersistentVolumeClaim"]["spec"]["accessModes"]
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(loader, "1.33.0", strict=True)
