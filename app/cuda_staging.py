"""Host-to-device copies of input batches for a CUDA engine: pinned buffers reused per shape, a side stream.

A pageable tensor's ``.to("cuda")`` first copies it into a pinned staging buffer the driver allocates,
then copies that to the device, synchronously. Here each batch shape gets one pinned host buffer,
allocated once (warm-up meets every batch size); the batch is copied into it, and the host-to-device copy
is queued on a side stream, so it does not wait behind the kernels already queued on the compute stream.
The compute stream waits for the copy (``wait_stream``) before the forward uses the result, and
``record_stream`` tells the caching allocator the result is used there. A buffer is written again only
after its previous copy has finished (an event per buffer).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["PinnedStager"]


class PinnedStager:
    """Moves uint8 batches to one CUDA device through reused pinned buffers on a copy stream."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device)
        self._buffers: dict[tuple[int, ...], Tensor] = {}
        self._copied: dict[tuple[int, ...], torch.cuda.Event] = {}

    @property
    def buffers(self) -> int:
        """How many pinned buffers exist (one per batch shape met)."""
        return len(self._buffers)

    def to_device(self, batch: Tensor) -> Tensor:
        """``batch`` (on the host) on the device, ready for the current stream."""
        shape = tuple(batch.shape)
        pinned = self._buffers.get(shape)
        if pinned is None:
            pinned = self._buffers[shape] = torch.empty(shape, dtype=batch.dtype, pin_memory=True)
        previous = self._copied.get(shape)
        if previous is not None:
            previous.synchronize()  # the last copy out of this buffer has finished: it may be overwritten
        pinned.copy_(batch)
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.stream):
            on_device = pinned.to(self.device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.stream)
        self._copied[shape] = done
        compute.wait_stream(self.stream)
        on_device.record_stream(compute)
        return on_device
