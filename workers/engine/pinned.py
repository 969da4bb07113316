"""Pinned host buffers allocated once and reused, for the copies every step makes.

A fresh `torch.empty(..., pin_memory=True)` per step goes through torch's caching host
allocator, which calls `cudaHostAlloc` whenever no cached block of the size is free: on every
size it has not seen yet, and whenever the cached ones are still in flight, as they are
while steps overlap. `cudaHostAlloc` is slow and may synchronise the device, so the first
pass over a new workload ran measurably slower than the second (issue 13, H200). A ring of
buffers that only ever grows (by powers of two), each guarded by an event, keeps those calls
out of the step loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class PinnedRing:
    """`slots` pinned byte buffers used in turn. A slot is written again only after the copy
    that last used it has finished (its event), and only `slots` uses later: a caller that
    reads a host view (`to_host`) must be done with it by then."""

    def __init__(self, slots: int) -> None:
        if slots < 2:
            raise ValueError(f"a pinned ring needs at least 2 slots, got {slots}")
        self._buffers: list[torch.Tensor | None] = [None] * slots
        self._events: list[torch.cuda.Event | None] = [None] * slots
        self._next = 0
        self._last_slot = 0

    def _take(self, num_bytes: int) -> tuple[int, torch.Tensor]:
        slot = self._next
        self._next = (slot + 1) % len(self._buffers)
        event = self._events[slot]
        if event is not None:
            event.synchronize()  # the copy that last read or wrote this slot is done
        buffer = self._buffers[slot]
        if buffer is None or buffer.numel() < num_bytes:
            size = 1 << max(12, (num_bytes - 1).bit_length())
            buffer = self._buffers[slot] = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        return slot, buffer[:num_bytes]

    def _record(self, slot: int) -> None:
        event = self._events[slot] or torch.cuda.Event()
        event.record()
        self._events[slot] = event
        self._last_slot = slot

    @property
    def fence(self) -> torch.cuda.Event | None:
        """The event recorded after the latest copy: once it has passed, every copy made
        through the ring so far is done (one stream, in order), so a caller needs no event
        of its own."""
        return self._events[self._last_slot]

    def upload(self, arrays: Sequence[np.ndarray], dtype: torch.dtype,
               device: torch.device) -> list[torch.Tensor]:
        """`arrays` packed back to back into one slot and copied to `device` in one
        asynchronous transfer; returns a device tensor per array."""
        sizes = [array.size for array in arrays]
        slot, staging = self._take(sum(sizes) * dtype.itemsize)
        torch.cat([torch.from_numpy(array) for array in arrays], out=staging.view(dtype))
        on_device = staging.view(dtype).to(device, non_blocking=True)
        self._record(slot)
        return list(on_device.split(sizes))

    def to_host(self, tensor: torch.Tensor) -> torch.Tensor:
        """An asynchronous copy of the device `tensor` into a slot (valid for `slots` uses)."""
        slot, staging = self._take(tensor.numel() * tensor.element_size())
        host = staging.view(tensor.dtype).view(tensor.shape)
        host.copy_(tensor, non_blocking=True)
        self._record(slot)
        return host
