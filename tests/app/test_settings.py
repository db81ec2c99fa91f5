"""app.settings and app.cli: defaults, environment, flags over environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import get_args_parser
from app.settings import Settings


def settings_from(argv: list[str]) -> Settings:
    args = get_args_parser().parse_args(argv)
    return Settings(**{k: v for k, v in vars(args).items() if v is not None})


def test_defaults() -> None:
    s = Settings()
    assert s.weights_dir == Path("weights") and s.device == "auto" and s.precision == "fp32"
    assert s.max_wait_ms == 0 and s.api_key is None and s.cors_origins == []
    assert s.max_upload_bytes == 10 * 1_048_576


def test_environment_is_read_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESNET_SERVE_MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("RESNET_SERVE_PORT", "9001")
    monkeypatch.setenv("RESNET_SERVE_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("RESNET_SERVE_STRICT", "true")
    s = settings_from(["--port", "9002"])
    assert (s.max_batch_size, s.port, s.strict) == (7, 9002, True)
    assert s.cors_origins == ["https://a.example", "https://b.example"]
    assert settings_from(["--no-strict"]).strict is False


def test_tuning_knobs_are_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    flags = {action.dest for action in get_args_parser()._actions} - {"help", "version"}
    tuning = {"channels_last", "autotune_batch", "inline_decode_max_pixels", "malloc_keep_mb", "gc_gen0_threshold"}
    tuning |= {"sim_t0_ms", "sim_t1_ms", "sim_lock_path", "max_pixels_per_byte"}
    assert flags == set(Settings.model_fields) - tuning
    with pytest.raises(SystemExit):
        get_args_parser().parse_args(["--malloc-keep-mb", "0"])
    monkeypatch.setenv("RESNET_SERVE_MALLOC_KEEP_MB", "0")
    monkeypatch.setenv("RESNET_SERVE_CHANNELS_LAST", "false")
    s = settings_from([])
    assert (s.malloc_keep_mb, s.channels_last) == (0, False)


def test_help_shows_each_description_default_and_environment_variable() -> None:
    text = get_args_parser().format_help()
    assert "largest request body, in MiB (413 beyond); default 10.0; env RESNET_SERVE_MAX_UPLOAD_MB" in " ".join(
        text.split()
    )
    assert "{fp32,fp16,bf16}" in text and "--strict, --no-strict" in text


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit):
        get_args_parser().parse_args(["--version"])
    assert capsys.readouterr().out.strip() == f"resnet-serve {version('resnet-serve')}"


@pytest.mark.parametrize(
    "argv",
    [
        ["--device", "tpu"],
        ["--max-batch-size", "0"],
        ["--timeout-s", "0"],
        ["--max-upload-mb", "-1"],
        ["--image-formats", "PNG,ICO"],
        ["--image-formats", ""],
        ["--model-control", "--processes", "2"],
        ["--model-control", "--host", "0.0.0.0"],
        ["--model-control", "--host", "192.0.2.7"],
    ],
)
def test_invalid_values_are_rejected(argv: list[str]) -> None:
    with pytest.raises(ValueError):
        settings_from(argv)


def test_cores_follow_a_container_cpu_limit(tmp_path: Path) -> None:
    from app.settings import available_cores

    cpu_max = tmp_path / "cpu.max"
    available = available_cores(tmp_path / "absent")
    cpu_max.write_text("max 100000\n")
    assert available_cores(cpu_max) == available
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs: two threads' worth
    assert available_cores(cpu_max) == min(2, available)
    cpu_max.write_text("50000 100000\n")
    assert available_cores(cpu_max) == 1


def test_memory_follows_a_container_memory_limit_and_sizes_the_body_budget(tmp_path: Path) -> None:
    from app.settings import available_memory

    memory_max = tmp_path / "memory.max"
    host = available_memory(tmp_path / "absent")
    memory_max.write_text("max\n")
    assert available_memory(memory_max) == host
    memory_max.write_text(f"{512 * 1_048_576}\n")
    assert available_memory(memory_max) == min(host, 512 * 1_048_576)
    one, four = Settings(processes=1), Settings(processes=4)
    assert one.max_body_bytes_in_flight_mb == pytest.approx(available_memory() / 8 / 1_048_576, abs=0.1)
    assert four.max_body_bytes_in_flight_mb == pytest.approx(one.max_body_bytes_in_flight_mb / 4, abs=0.1)


def test_image_formats_are_a_comma_separated_list_of_known_formats() -> None:
    assert settings_from(["--image-formats", "png, jpeg"]).decode_limits.formats == ("PNG", "JPEG")
    assert "TIFF" in settings_from([]).image_formats


@pytest.mark.parametrize(
    "argv",
    [
        ["--model-control"],
        ["--model-control", "--host", "::1"],
        ["--model-control", "--host", "localhost"],
        ["--model-control", "--host", "0.0.0.0", "--api-key", "k"],
        ["--watch-weights", "--processes", "2"],
    ],
)
def test_model_control_binds_loopback_or_needs_a_key_and_watch_works_in_every_process(argv: list[str]) -> None:
    settings = settings_from(argv)
    assert settings.model_control or settings.watch_weights


def section(path: Path, heading: str) -> str:
    """The text of one Markdown section, from its heading to the next heading of the same level or higher."""
    text = path.read_text()
    level = heading.split(" ")[0]
    start = text.index(heading + "\n")
    ends = [text.find(f"\n{'#' * n} ", start + len(heading)) for n in range(1, len(level) + 1)]
    return text[start : min([end for end in ends if end != -1], default=len(text))]


def test_every_setting_is_documented() -> None:
    """Each flag is in docs/configuration.md's table, each tuning knob in docs/performance.md's."""
    root = Path(__file__).resolve().parents[2]
    table = section(root / "docs" / "configuration.md", "# Configuration")
    flags = {o for a in get_args_parser()._actions for o in a.option_strings} - {"-h", "--help", "--version"}
    assert {flag for flag in flags if f"`{flag}`" not in table} == set()
    knobs = section(root / "docs" / "performance.md", "## Tuning knobs")
    tuning = set(Settings.model_fields) - {action.dest for action in get_args_parser()._actions}
    assert tuning, "no environment-only settings found"
    assert {name for name in tuning if f"RESNET_SERVE_{name.upper()}" not in knobs} == set()
