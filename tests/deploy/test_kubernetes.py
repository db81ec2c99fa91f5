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


# Pod Security Standard "restricted" (https://kubernetes.io/docs/concepts/security/pod-security-standards/).
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(spec: dict) -> list[str]:
    """What in the pod ``spec`` the "restricted" standard forbids (empty when it complies)."""
    problems = [key for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key)]
    problems += [f"volume {v['name']}" for v in spec.get("volumes", []) if not RESTRICTED_VOLUMES & v.keys()]
    pod = spec.get("securityContext", {})
    for container in spec["containers"] + spec.get("initContainers", []):
        context, name = container.get("securityContext", {}), container["name"]
        effective = {**pod, **context}
        capabilities = context.get("capabilities", {})
        checks = {
            "privileged": not context.get("privileged", False),
            "allowPrivilegeEscalation: false": context.get("allowPrivilegeEscalation") is False,
            "runAsNonRoot: true": effective.get("runAsNonRoot") is True,
            "runAsUser not 0": effective.get("runAsUser") != 0,
            "seccompProfile": effective.get("seccompProfile", {}).get("type") in ("RuntimeDefault", "Localhost"),
            "capabilities drop ALL": "ALL" in capabilities.get("drop", []),
            "no capabilities added": set(capabilities.get("add", [])) <= {"NET_BIND_SERVICE"},
            "no hostPort": not any(port.get("hostPort") for port in container.get("ports", [])),
        }
        problems += [f"{name}: {check}" for check, ok in checks.items() if not ok]
    return problems


@pytest.fixture(scope="module")
def loader() -> dict:
    (pod,) = load(BASE / "weights-loader.yaml")
    return pod


def env_var(container: dict, name: str) -> dict:
    (entry,) = [e for e in container.get("env", []) if e["name"] == name]
    return entry


def test_the_namespace_enforces_the_restricted_standard(resources):
    labels = resources["Namespace"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_serving_and_loader_pods_meet_the_restricted_standard(pod, loader):
    assert restricted_violations(pod["spec"]) == []
    assert restricted_violations(loader["spec"]) == []


def test_the_restricted_check_catches_each_kind_of_violation(pod):
    spec = yaml.safe_load(yaml.safe_dump(pod["spec"]))
    (container,) = spec["containers"]
    del spec["securityContext"]["seccompProfile"]
    container["securityContext"]["allowPrivilegeEscalation"] = True
    container["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN"]}
    spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    assert sorted(restricted_violations(spec)) == [
        "resnet-serve: allowPrivilegeEscalation: false",
        "resnet-serve: capabilities drop ALL",
        "resnet-serve: no capabilities added",
        "resnet-serve: seccompProfile",
        "volume host",
    ]


def test_no_pod_gets_a_service_account_token(pod, loader):
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert loader["spec"]["automountServiceAccountToken"] is False


def test_a_disruption_budget_covers_the_serving_pods(resources, pod):
    budget = resources["PodDisruptionBudget"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert budget["maxUnavailable"] == 1, "one pod at a time, and a single replica never blocks a drain"
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_the_api_key_comes_from_a_secret_that_is_not_committed(container, kustomization):
    reference = env_var(container, "RESNET_SERVE_API_KEY")["valueFrom"]["secretKeyRef"]
    assert reference["name"] and reference["key"] and not reference.get("optional", False)
    assert "RESNET_SERVE_API_KEY" not in settings(kustomization)
    assert "secretGenerator" not in kustomization
    committed = [doc for path in BASE.rglob("*.yaml") for doc in load(path)]
    assert not any(doc.get("kind") == "Secret" for doc in committed), "the key is created in the cluster, not here"


def test_every_empty_dir_has_a_size_limit(pod, loader):
    for spec in (pod["spec"], loader["spec"]):
        for volume in spec.get("volumes", []):
            if "emptyDir" in volume:
                assert volume["emptyDir"].get("sizeLimit"), volume["name"]


def test_processes_and_torch_threads_follow_the_cpu_limit(container, kustomization):
    limit = container["resources"]["limits"]["cpu"]
    assert int(limit) >= 1, "a CPU limit: the container's cgroup quota, which the service reads too"
    processes = env_var(container, "RESNET_SERVE_PROCESSES")["valueFrom"]["resourceFieldRef"]
    assert processes["resource"] == "limits.cpu" and processes["divisor"] == "1"
    assert processes.get("containerName", container["name"]) == container["name"]
    processes_count = int(limit)  # what resourceFieldRef with divisor 1 gives for a whole number of CPUs
    threads = int(env_var(container, "RESNET_SERVE_TORCH_THREADS")["value"])
    assert processes_count * threads <= int(limit), "processes x torch threads within the CPU limit"
    assert {"RESNET_SERVE_PROCESSES", "RESNET_SERVE_TORCH_THREADS"}.isdisjoint(settings(kustomization))


def test_the_server_cannot_write_the_weights(pod, container, loader):
    mount = next(m for m in container["volumeMounts"] if m["name"] == "weights")
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "weights")
    assert mount["readOnly"] is True and volume["persistentVolumeClaim"]["readOnly"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    writer, server = loader["spec"]["securityContext"], pod["spec"]["securityContext"]
    assert writer["runAsUser"] != server["runAsUser"], "the checkpoints belong to another user than the server"
