"""DataLoaders over a ``LoadedData``: shuffled, per-process training batches and a test pass.

In-memory datasets (TensorDatasets) are indexed with a whole batch of indices at once: one tensor
gather per batch and no collate. Image folders decode per image, in ``workers`` processes.
"""

from __future__ import annotations

from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, Subset

from training.datasets import LoadedData
from training.distributed import DistributedContext

__all__ = ["IN_MEMORY_TEST_BATCH", "make_loaders", "make_test_loader", "make_train_loader", "set_epoch"]

#: Test batch size for in-memory datasets in training (no gradients, and no decoding to spread over workers).
IN_MEMORY_TEST_BATCH = 1024


def make_train_loader(
    data: LoadedData,
    *,
    batch_size: int,
    seed: int = 0,
    workers: int = 0,
    pin_memory: bool = False,
    context: DistributedContext | None = None,
) -> DataLoader:
    """This process's shuffled share of the training split; call ``set_epoch`` before each epoch.

    Shuffling depends only on (``seed``, epoch), so a resumed run sees the batches an unbroken run would.
    """
    context = context or DistributedContext()
    sampler = DistributedSampler(
        data.train, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=seed
    )
    if data.in_memory:
        return DataLoader(data.train, sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None)
    return DataLoader(
        data.train,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        drop_last=False,
    )


def make_test_loader(
    data: LoadedData, *, batch_size: int, workers: int = 0, context: DistributedContext | None = None
) -> DataLoader:
    """The test split in order, or this process's every ``world_size``-th image of it."""
    context = context or DistributedContext()
    indices = list(range(context.rank, len(data.test), context.world_size))
    if data.in_memory:
        return DataLoader(data.test, sampler=BatchSampler(indices, batch_size, drop_last=False), batch_size=None)
    return DataLoader(Subset(data.test, indices), batch_size=batch_size, num_workers=workers)


def make_loaders(
    data: LoadedData,
    *,
    batch_size: int,
    seed: int = 0,
    workers: int = 0,
    pin_memory: bool = False,
    context: DistributedContext | None = None,
) -> tuple[DataLoader, DataLoader]:
    """Training and test loaders as the training loop uses them (test batches of ``IN_MEMORY_TEST_BATCH`` in memory)."""
    train = make_train_loader(
        data, batch_size=batch_size, seed=seed, workers=workers, pin_memory=pin_memory, context=context
    )
    test_batch = IN_MEMORY_TEST_BATCH if data.in_memory else batch_size
    return train, make_test_loader(data, batch_size=test_batch, workers=workers, context=context)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Reshuffle ``loader``'s DistributedSampler (possibly inside a BatchSampler) for ``epoch``."""
    sampler = loader.sampler.sampler if isinstance(loader.sampler, BatchSampler) else loader.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
