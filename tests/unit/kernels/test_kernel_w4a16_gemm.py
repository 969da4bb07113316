"""The w4a16 GEMM against dequantise-then-matmul, on fresh random int4 weights every case."""

from __future__ import annotations

import pytest
import torch

from pagefleet.kernels.testing import TOLERANCE, nan_like, random_tensor, relative_error
from pagefleet.kernels.w4a16_gemm import (
    dequantize_int4,
    pack_int4_rows,
    split_k,
    unpack_int4_rows,
    w4a16_gemm,
    w4a16_gemm_ref,
)

FULL = torch.cuda.is_available()
# (M, N, K, group): decode and prefill rows, N not a multiple of any block, several groups.
SHAPES = (
    [(1, 4096, 4096, 128), (7, 6144, 4096, 128), (33, 1000, 14336, 128), (300, 4096, 1024, 64),
     (16, 96, 256, 32)]
    if FULL else [(1, 24, 128, 128), (5, 72, 256, 64), (33, 40, 64, 32), (70, 136, 128, 128)]
)


def _random_int4(n: int, k: int, group: int, generator: torch.Generator,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    values = torch.randint(0, 16, (n, k), generator=generator, device=generator.device)
    scales = torch.rand(n, k // group, generator=generator, device=generator.device) * 0.02 + 1e-3
    zeros = torch.randint(0, 16, (n, k // group), generator=generator, device=generator.device).float()
    return pack_int4_rows(values).to(device), scales.to(device), zeros.to(device)


def test_pack_and_unpack_are_inverse_in_every_nibble(generator: torch.Generator) -> None:
    values = torch.randint(0, 16, (9, 64), generator=generator, device=generator.device)
    values[0] = 15  # sign bit set in every int32 of the row
    packed = pack_int4_rows(values)
    assert packed.dtype == torch.int32 and packed.shape == (9, 8)
    assert torch.equal(unpack_int4_rows(packed), values.to(torch.uint8))
    assert packed[0, 0].item() == -1
    assert (packed[1, 0].item() >> 4) & 0xF == values[1, 1].item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_w4a16_gemm(shape: tuple[int, int, int, int], dtype: torch.dtype, device: torch.device,
                    generator: torch.Generator) -> None:
    m, n, k, group = shape
    qweight, scales, zeros = _random_int4(n, k, group, generator, device)
    x = random_tensor((m, k), dtype, generator, device)
    out = nan_like(torch.empty(m, n, dtype=dtype, device=device))
    w4a16_gemm(x, qweight, scales, zeros, out)
    assert relative_error(out, w4a16_gemm_ref(x, qweight, scales, zeros)) < TOLERANCE[dtype]


def test_reference_dequantises_each_group_with_its_own_scale_and_zero(generator: torch.Generator) -> None:
    values = torch.randint(0, 16, (3, 64), generator=generator, device=generator.device)
    scales = torch.tensor([[0.5, 2.0]], device=generator.device).expand(3, 2).contiguous()
    zeros = torch.tensor([[8.0, 3.0]], device=generator.device).expand(3, 2).contiguous()
    weight = dequantize_int4(pack_int4_rows(values), scales, zeros)
    assert torch.equal(weight[:, :32], (values[:, :32].float() - 8) * 0.5)
    assert torch.equal(weight[:, 32:], (values[:, 32:].float() - 3) * 2.0)


def test_rejects_bad_layouts(device: torch.device, generator: torch.Generator) -> None:
    qweight, scales, zeros = _random_int4(16, 128, 128, generator, device)
    x = random_tensor((2, 128), torch.float32, generator, device)
    with pytest.raises(ValueError, match="qweight must have shape"):
        w4a16_gemm(random_tensor((2, 256), torch.float32, generator, device), qweight, scales, zeros,
                   torch.empty(2, 16, device=device))
    with pytest.raises(ValueError, match="group size must be one of"):
        w4a16_gemm(x, qweight, scales.repeat(1, 8), zeros.repeat(1, 8), torch.empty(2, 16, device=device))
    with pytest.raises(ValueError, match="must be float32"):
        w4a16_gemm(x, qweight, scales.half(), zeros, torch.empty(2, 16, device=device))
    with pytest.raises(ValueError, match="out must be"):
        w4a16_gemm(x, qweight, scales, zeros, torch.empty(2, 16, device=device, dtype=torch.float16))


def test_split_k_fills_the_machine_only_when_tiles_are_few() -> None:
    assert split_k(num_tiles=64, num_k_blocks=112, target_programs=264) == 4
    assert split_k(num_tiles=1, num_k_blocks=3, target_programs=264) == 3
    assert split_k(num_tiles=1, num_k_blocks=224, target_programs=264) == 16
    assert split_k(num_tiles=448, num_k_blocks=64, target_programs=264) == 1
