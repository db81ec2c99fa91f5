"""Read and write the one checkpoint format: a ``.safetensors`` file whose header describes the model.

Loading never unpickles: tensors come from safetensors, the description from JSON in its header.
Writing is atomic: the file is serialized in memory, written to a temporary file in the same directory,
fsynced, then renamed over the target; if any step fails (a full disk, say) the temporary file is removed,
the previous file is untouched, and the ``OSError`` propagates.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import nn

from models.golden import GoldenSet, is_golden_key
from models.metadata import METADATA_KEY, CheckpointError, CheckpointMetadata
from models.registry import create_model

__all__ = [
    "add_golden",
    "build_model",
    "load_checkpoint",
    "read_metadata",
    "save_checkpoint",
    "write_atomically",
]

SUFFIX = ".safetensors"


def save_checkpoint(
    model: nn.Module, path: str | os.PathLike[str], metadata: CheckpointMetadata, golden: GoldenSet | None = None
) -> Path:
    """Write ``model``'s weights, ``metadata`` and its golden images, if any, to ``path`` atomically.

    The metadata is validated as ``read_metadata`` will validate it, so no file is written that cannot be read.
    Returns the path written.
    """
    path = Path(path)
    if path.suffix != SUFFIX:
        raise CheckpointError(f"checkpoint file names end in {SUFFIX}, got {path.name!r}")
    header = metadata.to_json()
    try:
        CheckpointMetadata.from_json(header)
    except CheckpointError as exc:
        raise CheckpointError(f"refusing to write {path}: {exc}") from None
    # Unwrap DistributedDataParallel / torch.compile wrappers so keys match the bare model.
    bare = getattr(model, "module", model)
    bare = getattr(bare, "_orig_mod", bare)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in bare.state_dict().items()}
    if golden is not None:
        if golden.num_classes != metadata.architecture.num_classes:
            raise CheckpointError(
                f"refusing to write {path}: golden probabilities have {golden.num_classes} classes, "
                f"the model {metadata.architecture.num_classes}"
            )
        tensors.update(golden.to_tensors())
    write_atomically(path, save(tensors, metadata={METADATA_KEY: header}))
    return path


def add_golden(path: str | os.PathLike[str], golden: GoldenSet) -> Path:
    """Rewrite the checkpoint at ``path`` with ``golden`` as its golden set (replacing any), atomically."""
    model, metadata = load_checkpoint(path)
    return save_checkpoint(model, path, metadata, golden)


def write_atomically(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data``: readers see the old file or the new one, never a part of either.

    On failure (``OSError``: disk full, file too large, no permission) the temporary file is removed
    and the old file, if any, stays as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with open(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes it owner-only; checkpoints are read by other users
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def read_metadata(path: str | os.PathLike[str]) -> CheckpointMetadata:
    """Read and validate only the header of a checkpoint (cheap: no tensor is loaded)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or foreign?): {exc}") from None
    if METADATA_KEY not in header:
        raise CheckpointError(
            f"{path}: safetensors file without {METADATA_KEY!r} metadata; "
            "import plain torchvision weights with `resnet-convert`"
        )
    try:
        return CheckpointMetadata.from_json(header[METADATA_KEY])
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def build_model(metadata: CheckpointMetadata) -> nn.Module:
    """Construct the (untrained) architecture a checkpoint's metadata describes."""
    arch = metadata.architecture
    try:
        return create_model(arch.name, num_classes=arch.num_classes, in_channels=arch.in_channels, **arch.kwargs)
    except KeyError as exc:
        raise CheckpointError(str(exc.args[0])) from None
    except TypeError as exc:
        raise CheckpointError(f"architecture {arch.name!r} rejects its stored arguments: {exc}") from None


def load_checkpoint(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, CheckpointMetadata]:
    """Load a checkpoint: the model in eval mode on ``device``, and its metadata."""
    metadata = read_metadata(path)
    model = build_model(metadata)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: tensors unreadable (truncated?): {exc}") from None
    state = {key: tensor for key, tensor in state.items() if not is_golden_key(key)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match architecture {metadata.architecture.name!r}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(
                f"{path}: tensor {key!r} has shape {tuple(tensor.shape)}, "
                f"the architecture expects {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), metadata
