"""deploy/kserve/inferenceservice.yaml validated offline against KServe's InferenceService CRD schema.

The CRD is vendored (deploy/kserve/README.md says from where). The schema is made strict the way
``kubectl apply --validate=strict`` is: an unknown field (a typo) is an error, not silently pruned.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
from typing import Any

import pytest
import yaml
from deploy_files import ROOT

jsonschema = pytest.importorskip("jsonschema")

BASE = ROOT / "deploy/kserve"
CRD = BASE / "crd/serving.kserve.io_inferenceservices.yaml.gz"
CRD_SHA256 = "57c3bf13f77de94678bf2ae3748056ec071ad2b9e88d6a28f44fb4710758fcff"  # kserve v0.20.0
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def strict(schema: Any) -> Any:
    """A Kubernetes structural schema as JSON Schema: unknown fields refused, int-or-string as such."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    open_ended = "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and not open_ended:
        out["additionalProperties"] = False
    if out.get("x-kubernetes-int-or-string") and "type" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


@pytest.fixture(scope="module")
def validator() -> Any:
    text = gzip.decompress(CRD.read_bytes())
    assert hashlib.sha256(text).hexdigest() == CRD_SHA256, (
        "the vendored CRD is not the one deploy/kserve/README.md names"
    )
    crd = yaml.load(text, Loader=Loader)
    assert crd["spec"]["names"]["kind"] == "InferenceService"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


@pytest.fixture(scope="module")
def isvc() -> dict:
    return yaml.safe_load((BASE / "inferenceservice.yaml").read_text())


@pytest.fixture(scope="module")
def container(isvc) -> dict:
    (container,) = isvc["spec"]["predictor"]["containers"]
    return container


def errors(validator, document: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_the_inferenceservice_validates_against_kserves_crd(validator, isvc) -> None:
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert errors(validator, isvc) == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda spec: spec["containers"][0].__setitem__("readinesProbe", spec["containers"][0].pop("readinessProbe")),
        lambda spec: spec.__setitem__("protocolVersion", "v2"),  # only model-format predictors have one
        lambda spec: spec["containers"][0]["ports"][0].__setitem__("containerPort", "eight thousand"),
    ],
    ids=["typo", "protocol-version-on-a-custom-container", "wrong-type"],
)
def test_the_check_catches_a_broken_manifest(validator, isvc, breakage) -> None:
    broken = copy.deepcopy(isvc)
    breakage(broken["spec"]["predictor"])
    assert errors(validator, broken)


def test_the_predictor_is_this_image_serving_v2_on_8000(container) -> None:
    kustomization = yaml.safe_load((ROOT / "deploy/kubernetes/kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    assert container["image"] == f"{image['newName']}:{image['newTag']}"
    assert container["name"] == "kserve-container"  # KServe's name for a custom predictor's serving container
    assert container["command"] == ["resnet-serve"]
    args = container["args"]
    assert args[args.index("--port") + 1] == "8000" and container["ports"][0]["containerPort"] == 8000
    assert args[args.index("--weights-dir") + 1] == "/mnt/models"  # where KServe's storage initializer mounts
    env = {e["name"]: e for e in container["env"]}
    assert env["STORAGE_URI"]["value"].startswith("pvc://resnet-serve-weights")
    assert env["RESNET_SERVE_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "resnet-serve-api-key",
        "key": "api-key",
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


def test_the_predictor_runs_as_locked_down_as_the_deployment(isvc, container) -> None:
    deployment = yaml.safe_load((ROOT / "deploy/kubernetes/deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (reference,) = pod["containers"]
    predictor = isvc["spec"]["predictor"]
    assert predictor["securityContext"] == pod["securityContext"]
    assert container["securityContext"] == reference["securityContext"]
    assert container["resources"] == reference["resources"]
    assert predictor["terminationGracePeriodSeconds"] == pod["terminationGracePeriodSeconds"]
    assert predictor["automountServiceAccountToken"] is False
