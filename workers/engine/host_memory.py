"""Host memory for what leaves the device: a sleeping model's weights, swapped-out KV blocks.

Both live in pinned host memory when the device is a GPU (pinned pages copy at full PCIe
speed and asynchronously; pageable ones go through a bounce buffer), and in plain memory
otherwise, so the same code runs, and is tested, on the CPU.

`HostWeights` packs every parameter and buffer of a model into one flat host buffer. Weights
never change during inference, so the host copy is made once (on the first sleep) and kept:
later sleeps only drop the device copy, and a wake is one large host-to-device copy into one
flat device buffer, the fastest transfer the link offers. The price is host memory the size
of the weights for as long as the process lives, which is what standby is for.

`HostKVCache` is the swap space: host blocks shaped like the device's KV blocks, handed out
by a `BlockPool` of their own, filled and drained by block id.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from pagefleet.kernels.host_math import cdiv

_ALIGN = 256  # bytes: every tensor in a flat buffer starts aligned for any dtype and vector load

KVCaches = list[tuple[torch.Tensor, torch.Tensor]]


def host_empty(owner: object, num_bytes: int, device: torch.device) -> torch.Tensor:
    """A flat uint8 host buffer, pinned while `owner` lives when it is to feed a CUDA device.

    Pinned by registering ordinary memory (`cudaHostRegister`) rather than through
    `pin_memory=True`: PyTorch's pinned allocator rounds every size up to a power of two,
    which would pin 32 GiB for the 16 GiB of an 8B model's weights."""
    buffer = torch.empty(num_bytes, dtype=torch.uint8)
    if device.type == "cuda" and num_bytes > 0:
        cudart = torch.cuda.cudart()
        error = cudart.cudaHostRegister(buffer.data_ptr(), num_bytes, 0)
        if int(error) != 0:
            raise RuntimeError(f"could not pin {num_bytes} bytes of host memory: {error}")
        weakref.finalize(owner, cudart.cudaHostUnregister, buffer.data_ptr())
    return buffer


@dataclass(frozen=True, slots=True)
class _Slot:
    tensor: torch.Tensor  # the parameter or buffer whose `.data` moves
    shape: torch.Size  # kept: the tensor itself is an empty placeholder while asleep
    stride: tuple[int, ...]  # kept too: a transposed weight (column-major for a GEMM) stays so
    offset: int  # bytes into the flat buffer
    num_bytes: int


def _view(flat: torch.Tensor, slot: _Slot) -> torch.Tensor:
    elements = flat[slot.offset : slot.offset + slot.num_bytes].view(slot.tensor.dtype)
    return elements.as_strided(slot.shape, slot.stride)


def _dense_stride(tensor: torch.Tensor) -> tuple[int, ...]:
    """The tensor's own strides when its elements fill their span exactly once (contiguous
    or permuted), else contiguous ones (the values are what matters then)."""
    span = 1 + sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride(), strict=True))
    if tensor.numel() > 0 and span == tensor.numel() and all(s > 0 for s in tensor.stride()):
        return tensor.stride()
    return torch.empty(tensor.shape, device="meta").stride()


class HostWeights:
    """A model's weights in one flat host buffer; see the module docstring for why."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.device = device
        self.slots: list[_Slot] = []
        offset = 0
        for tensor in _tensors(model):
            num_bytes = tensor.numel() * tensor.element_size()
            self.slots.append(_Slot(tensor, tensor.shape, _dense_stride(tensor), offset, num_bytes))
            offset += cdiv(num_bytes, _ALIGN) * _ALIGN
        self.num_bytes = offset
        self.flat = host_empty(self, offset, device)
        for slot in self.slots:
            _view(self.flat, slot).copy_(slot.tensor.data, non_blocking=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def release_device(self) -> None:
        """Point every tensor at an empty placeholder, so its device memory can be freed."""
        for slot in self.slots:
            slot.tensor.data = torch.empty(0, dtype=slot.tensor.dtype, device=self.device)

    def restore_device(self) -> None:
        """Give every tensor its values back on the device: one copy into one flat buffer
        (on the CPU the host buffer is the device memory, so no copy at all)."""
        flat = self.flat
        if self.device.type != "cpu":
            flat = torch.empty(self.num_bytes, dtype=torch.uint8, device=self.device)
            flat.copy_(self.flat, non_blocking=True)
        for slot in self.slots:
            slot.tensor.data = _view(flat, slot)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _tensors(model: torch.nn.Module) -> Iterator[torch.Tensor]:
    """Parameters, then buffers, each once (tied weights are one parameter)."""
    seen: set[int] = set()
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            yield tensor


class HostKVCache:
    """Swap space: `num_blocks` host blocks per layer, K and V, each block as its raw bytes.

    Blocks move as bytes, whatever the cache's dtype: a swap is a copy, and torch has no
    `index_copy_` for fp8 (`kv_cache_dtype="fp8"`)."""

    def __init__(self, device_caches: KVCaches, num_blocks: int, device: torch.device) -> None:
        k, _ = device_caches[0]
        self.device = device
        self.num_blocks = num_blocks
        block_bytes = k[0].numel() * k.element_size()
        self.flat = host_empty(self, 2 * len(device_caches) * num_blocks * block_bytes, device)
        per_layer = self.flat.view(len(device_caches), 2, num_blocks, block_bytes)
        self.caches: KVCaches = [(layer[0], layer[1]) for layer in per_layer]

    def swap_out(self, device_caches: KVCaches, pairs: list[tuple[int, int]]) -> None:
        """Copy device blocks to host blocks, `pairs` of (device id, host id). Returns once
        the host holds them: the device blocks may be overwritten by the next step."""
        src, host_dst = _index_pair(pairs)
        src = src.to(self.device)
        for (dev_k, dev_v), (host_k, host_v) in zip(device_caches, self.caches, strict=True):
            host_k.index_copy_(0, host_dst, _block_bytes(dev_k).index_select(0, src).cpu())
            host_v.index_copy_(0, host_dst, _block_bytes(dev_v).index_select(0, src).cpu())

    def swap_in(self, device_caches: KVCaches, pairs: list[tuple[int, int]]) -> None:
        """Copy host blocks to device blocks, `pairs` of (host id, device id), ahead of the
        step that reads them."""
        src, dst = _index_pair(pairs)
        dev_dst = dst.to(self.device)
        for (dev_k, dev_v), (host_k, host_v) in zip(device_caches, self.caches, strict=True):
            # The gathered blocks are a fresh (pageable) tensor: copied once to the device,
            # rather than pinned first (a second copy and a pinned allocation per layer).
            _block_bytes(dev_k).index_copy_(0, dev_dst, host_k.index_select(0, src).to(self.device))
            _block_bytes(dev_v).index_copy_(0, dev_dst, host_v.index_select(0, src).to(self.device))


def _block_bytes(cache: torch.Tensor) -> torch.Tensor:
    """A contiguous cache `[num_blocks, ...]` as `[num_blocks, bytes per block]` uint8."""
    return cache.view(torch.uint8).view(cache.shape[0], -1)


def _index_pair(pairs: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The sources and the destinations of (source, destination) pairs, as host tensors."""
    ids = torch.tensor(pairs, dtype=torch.long).view(-1, 2)
    return ids[:, 0], ids[:, 1]
