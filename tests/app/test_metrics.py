"""app.metrics: the contract's families, one model's series, withdrawing them, and multiprocess mode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from contract import METRIC_FAMILIES
from prometheus_client import multiprocess, values
from prometheus_client.parser import text_string_to_metric_families

from app.batcher import BatchStats
from app.metrics import Metrics, ModelInfoLabels


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_every_contract_family_is_exposed() -> None:
    text = Metrics().render().decode()
    exposed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    exposed |= {name + "_total" for name in exposed}  # counters: the family is declared without the suffix
    assert exposed >= METRIC_FAMILIES


def test_a_batch_is_observed_under_its_model() -> None:
    metrics = Metrics()
    model = metrics.for_model("m")
    model.observe_batch(BatchStats(3, [0.001, 0.002, 0.003], 0.02, ok=True))
    model.observe_batch(BatchStats(2, [0.001, 0.001], 0.01, ok=False))
    s = samples(metrics)
    m = (("model", "m"),)
    assert s[("resnet_serve_images_total", m)] == 3  # the failed batch classified nothing
    assert s[("resnet_serve_batch_size_count", m)] == 2 and s[("resnet_serve_batch_size_sum", m)] == 5
    assert s[("resnet_serve_queue_wait_seconds_count", m)] == 5
    assert s[("resnet_serve_inference_seconds_count", m)] == 2


def test_model_info_is_replaced_and_withdrawn() -> None:
    metrics = Metrics()
    model = metrics.for_model("m")
    model.publish(ModelInfoLabels("resnet20", "cpu", "fp32", "eager", 16, True, "v1"), lambda: 7, {})
    model.publish(ModelInfoLabels("resnet20", "cpu", "fp32", "eager", 16, False, "v1"), lambda: 7, {})
    info = {k: v for k, v in samples(metrics).items() if k[0] == "resnet_serve_model_info"}
    assert list(info.values()) == [1.0]
    [(_, labels)] = info
    assert dict(labels) == {
        "model": "m",
        "arch": "resnet20",
        "device": "cpu",
        "precision": "fp32",
        "variant": "eager",
        "batch_cap": "16",
        "default": "False",
        "version": "v1",
    }
    assert samples(metrics)[("resnet_serve_queue_depth", (("model", "m"),))] == 7
    model.withdraw()
    names = {name for name, _ in samples(metrics)}
    assert "resnet_serve_model_info" not in names and "resnet_serve_queue_depth" not in names


def test_a_retiring_version_never_withdraws_its_successors_series() -> None:
    metrics = Metrics()
    old, new = metrics.for_model("m"), metrics.for_model("m")
    old.publish(ModelInfoLabels("resnet20", "cpu", "fp32", "eager", 16, True, "v1"), lambda: 1, {1: 0.5, 8: 1.0})
    new.publish(ModelInfoLabels("resnet20", "cpu", "fp32", "eager", 16, True, "v2"), lambda: 2, {1: 0.25})
    old.withdraw()
    s = samples(metrics)
    versions = [dict(labels)["version"] for name, labels in s if name == "resnet_serve_model_info"]
    assert versions == ["v2"] and s[("resnet_serve_queue_depth", (("model", "m"),))] == 2
    # the profile is the successor's alone: batch size 8 of the old version is gone
    profile = {dict(labels)["batch_size"]: value for (name, labels), value in s.items() if "profile_latency" in name}
    assert profile == {"1": 0.25}
    throughput = s[("resnet_serve_model_profile_images_per_second", (("batch_size", "1"), ("model", "m")))]
    assert throughput == 4.0
    new.withdraw()
    assert not [name for name, _ in samples(metrics) if "profile" in name]


PID = 4242


@pytest.fixture
def worker_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Metrics]:
    """``Metrics`` as a worker of ``--processes`` has them: its series in files of a shared directory."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    # What prometheus-client picks at import when the variable is set (a worker process imports it after).
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: PID))
    yield Metrics()
    values.close_all_multiprocess_files()


def test_multiprocess_mode_reads_the_files_and_withdraws_to_0(worker_metrics: Metrics, tmp_path: Path) -> None:
    assert worker_metrics.multiprocess
    model = worker_metrics.for_model("m")
    model.publish(ModelInfoLabels("resnet20", "cpu", "fp32", "eager", 16, True, "v1"), lambda: 3, {})
    m = (("model", "m"),)
    info = {k: v for k, v in samples(worker_metrics).items() if k[0] == "resnet_serve_model_info"}
    assert list(info.values()) == [1.0] and samples(worker_metrics)[("resnet_serve_queue_depth", m)] == 3
    model.depth_changed(5)  # the batcher's on_depth hook (no set_function across processes)
    model.observe_batch(BatchStats(2, [0.001, 0.001], 0.01, ok=True))
    s = samples(worker_metrics)
    assert s[("resnet_serve_queue_depth", m)] == 5 and s[("resnet_serve_images_total", m)] == 2
    model.withdraw()
    s = samples(worker_metrics)
    assert [v for k, v in s.items() if k[0] == "resnet_serve_model_info"] == [0.0]
    assert s[("resnet_serve_queue_depth", m)] == 0
    model.depth_changed(9)  # a retired service's batcher: the gauges are no longer its own
    model.observe_batch(BatchStats(1, [0.001], 0.01, ok=True))
    assert samples(worker_metrics)[("resnet_serve_queue_depth", m)] == 0
    multiprocess.mark_process_dead(PID, str(tmp_path))  # the process died: its live gauges go, counts stay
    s = samples(worker_metrics)
    assert not {"resnet_serve_model_info", "resnet_serve_queue_depth"} & {name for name, _ in s}
    assert s[("resnet_serve_images_total", m)] == 3
