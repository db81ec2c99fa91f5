"""The ResNet family, its registry and the one checkpoint format.

from models import create_model, list_models, save_checkpoint, load_checkpoint
"""

from models import mnist_resnet, resnet  # noqa: F401  (registers the architectures)
from models.checkpoint import add_golden, build_model, load_checkpoint, read_metadata, save_checkpoint
from models.golden import GoldenSet, read_golden
from models.metadata import (
    ArchitectureSpec,
    CheckpointError,
    CheckpointMetadata,
    PreprocessingSpec,
    Provenance,
    TrainingInfo,
)
from models.registry import architecture_info, create_model, list_models, register_model

__all__ = [
    "ArchitectureSpec",
    "CheckpointError",
    "CheckpointMetadata",
    "GoldenSet",
    "PreprocessingSpec",
    "Provenance",
    "TrainingInfo",
    "add_golden",
    "architecture_info",
    "build_model",
    "create_model",
    "list_models",
    "load_checkpoint",
    "read_golden",
    "read_metadata",
    "register_model",
    "save_checkpoint",
]
