"""Readers for the deployment tests: the repository's files parsed, never executed."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile, with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = pending + stripped
        pending = ""
        keyword, _, value = line.partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip(), start))
    return instructions


def exec_form(value: str) -> list[str]:
    """A CMD/ENTRYPOINT/RUN argument as argv: JSON exec form, else shell words."""
    value = value.strip()
    if value.startswith("["):
        return json.loads(value)
    return shlex.split(value)


def locked_version(lock: dict, name: str) -> str:
    versions = {p["version"] for p in lock["package"] if p["name"] == name}
    assert len(versions) == 1, f"{name} locked at {versions or 'no version'}"
    return versions.pop()


def locked_torch_cuda(lock: dict) -> str:
    """CUDA major.minor of the locked torch build, read from the CUDA runtime wheel torch depends on."""
    torch = next(p for p in lock["package"] if p["name"] == "torch")
    dependencies = {d["name"] for d in torch.get("dependencies", [])}
    assert "cuda-toolkit" in dependencies or any(d.startswith("nvidia-") for d in dependencies), (
        "the locked torch has no CUDA dependencies: is it a CPU-only build?"
    )
    runtime = locked_version(lock, "nvidia-cuda-runtime")
    match = re.match(r"(\d+)\.(\d+)\.", runtime)
    assert match, runtime
    return f"{match[1]}.{match[2]}"


def command_exists(argv: list[str], scripts: dict[str, str]) -> str | None:
    """None when ``argv`` starts a console script, ``python -m`` a package module, or ``python -c``;
    otherwise why not."""
    if not argv:
        return "empty command"
    program = argv[0]
    if program in scripts:
        return None
    if program in ("python", "python3"):
        if argv[1:2] == ["-c"]:
            return None
        if argv[1:2] == ["-m"] and len(argv) > 2:
            module = argv[2].replace(".", "/")
            if (ROOT / module / "__main__.py").is_file() or (ROOT / f"{module}.py").is_file():
                return None
            return f"python -m {argv[2]}: no such module in the repository"
    return f"{program!r} is neither a console script ({', '.join(sorted(scripts))}) nor python -m/-c"
