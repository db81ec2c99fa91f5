"""Typed results: what ``/predict``, ``/models``, ``/health`` and ``/ready`` answer, as frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Prediction", "PredictResult", "ModelInfo", "ModelList", "Readiness"]


@dataclass(frozen=True)
class Prediction:
    """One class and its softmax probability."""

    label: str
    index: int
    score: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Prediction:
        return cls(label=str(data["label"]), index=int(data["index"]), score=float(data["score"]))

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "index": self.index, "score": self.score}


@dataclass(frozen=True)
class PredictResult:
    """The top-k classes of one image, best first; ``version`` is the checkpoint's, when the server says."""

    model: str
    predictions: tuple[Prediction, ...]
    version: str | None = None

    @property
    def top(self) -> Prediction:
        """The best class."""
        return self.predictions[0]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PredictResult:
        predictions = tuple(Prediction.from_json(p) for p in data["predictions"])
        version = data.get("version")
        return cls(model=str(data["model"]), predictions=predictions, version=None if version is None else str(version))

    def to_json(self) -> dict[str, Any]:
        """The ``/predict`` response's shape (``version`` only when known)."""
        out: dict[str, Any] = {"model": self.model}
        if self.version is not None:
            out["version"] = self.version
        out["predictions"] = [p.to_json() for p in self.predictions]
        return out


@dataclass(frozen=True)
class ModelInfo:
    """A served model (``GET /models/{name}``): the common fields, and the whole answer in ``raw``."""

    name: str
    default: bool
    state: str
    version: str | None
    device: str
    precision: str
    variant: str
    labels: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelInfo:
        return cls(
            name=data["name"],
            default=bool(data["default"]),
            state=data["state"],
            version=data.get("version"),
            device=data["device"],
            precision=data["precision"],
            variant=data["variant"],
            labels=tuple(data["metadata"]["labels"]),
            raw=data,
        )


@dataclass(frozen=True)
class ModelList:
    """``GET /models``: the served models, the default one, and checkpoints that failed to load."""

    default: str | None
    models: tuple[ModelInfo, ...]
    failed: dict[str, str]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelList:
        models = tuple(ModelInfo.from_json(m) for m in data["models"])
        return cls(default=data.get("default"), models=models, failed=dict(data.get("failed", {})))


@dataclass(frozen=True)
class Readiness:
    """``GET /ready``: ``ready`` is whether it answered 200; ``detail`` why not, ``models`` the models when ready."""

    ready: bool
    models: tuple[str, ...] = ()
    detail: str | None = None
