"""`pagefleet bench kernels`: correctness at full size, the card's ceilings, attention speed.

Order: the kernel tests on CUDA (full-size shapes), then the two ceilings every number is
read against (device copy bandwidth, bf16 matmul rate), then paged decode in GB/s across
batch x context and paged prefill in TFLOP/s, each beside torch SDPA on dense tensors; every
decode shape also over an fp8 e4m3 cache (`kv_cache_dtype="fp8"`), in the same run.
`--tune` first sweeps launch parameters on the headline shapes and benchmarks the best.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import triton

from pagefleet.kernels.bench_attention import (
    AttentionShape,
    DecodeCase,
    PrefillCase,
    Timing,
    time_in_graph,
    time_ms,
)
from pagefleet.kernels.fp8_e4m3 import FP8_DTYPE
from pagefleet.kernels.host_math import cdiv
from pagefleet.kernels.paged_decode_attention import DecodeConfig
from pagefleet.kernels.paged_prefill_attention import PrefillConfig

DECODE_TUNING = [
    DecodeConfig(block_n=n, num_warps=w, num_stages=s)
    for n in (32, 64, 128) for w in (4, 8) for s in (2, 3)
]
ROTATE_BYTES = 256 << 20  # decode buffers cycled per timing: five times the H100's L2
# The first entry is the launch before GQA tile sharing (one query head per program): the
# sweep prints the shared-tile configs next to it, measured in the same run.
PREFILL_TUNING = [
    PrefillConfig(block_m=128, block_n=128, num_warps=8, num_stages=3, max_shared_heads=1),
    *(PrefillConfig(block_m=m, block_n=n, num_warps=w, num_stages=s)
      for m, n, w, s in [(128, 128, 8, 3), (128, 64, 8, 3), (256, 64, 8, 3), (256, 64, 8, 4),
                         (256, 32, 8, 3), (256, 32, 8, 4), (256, 64, 8, 2), (256, 64, 16, 3),
                         (512, 64, 16, 2), (512, 32, 16, 3)]),
]


@dataclass(frozen=True, slots=True)
class KernelBenchOptions:
    run_tests: bool = True
    tune: bool = False
    json_path: Path | None = None
    batches: tuple[int, ...] = (1, 32, 64, 128)
    contexts: tuple[int, ...] = (512, 4096, 32768)

    def __post_init__(self) -> None:
        if not self.batches or not self.contexts or min(self.batches + self.contexts) < 1:
            raise ValueError("batches and contexts must be non-empty and positive")


@dataclass(slots=True)
class Report:
    """Everything measured, written as JSON at the end (numbers first printed as they come)."""

    environment: dict[str, object] = field(default_factory=dict)
    tests_returncode: int | None = None
    ceilings: dict[str, float] = field(default_factory=dict)
    tuning: list[dict[str, object]] = field(default_factory=list)
    decode: list[dict[str, object]] = field(default_factory=list)
    prefill: list[dict[str, object]] = field(default_factory=list)


def run_kernel_tests() -> int:
    """The kernel and backend tests, at full size because CUDA is present."""
    root = Path(__file__).resolve().parents[1]
    paths = [root / "tests/unit/kernels", root / "tests/unit/workers/attention"]
    if not all(p.is_dir() for p in paths):
        print("kernel tests not found next to the package; skipped")
        return 0
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           f"--confcutdir={root / 'tests/unit'}", *map(str, paths)]
    return subprocess.call(cmd, cwd=root)


def measure_copy_gb_s(device: torch.device) -> float:
    """Device-to-device copy of 2 GiB, counting bytes read plus bytes written."""
    src = torch.randn(1 << 29, device=device)
    dst = torch.empty_like(src)
    return 2 * src.nbytes / time_ms(lambda: dst.copy_(src)) / 1e6


def measure_matmul_tflop_s(device: torch.device) -> float:
    """An 8192^3 bf16 matrix product on random data."""
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    return 2 * 8192**3 / time_ms(lambda: a @ b) / 1e9


def measure_fp8_matmul_tflop_s(device: torch.device) -> float:
    """An 8192^3 e4m3 product with row-wise scales, as FP8 linear layers run it (`_scaled_mm`)."""
    a = torch.randn(8192, 8192, device=device).to(FP8_DTYPE)
    b = torch.randn(8192, 8192, device=device).to(FP8_DTYPE)
    scale_a = torch.ones(8192, 1, device=device)
    scale_b = torch.ones(1, 8192, device=device)
    return 2 * 8192**3 / time_ms(lambda: torch._scaled_mm(
        a, b.t(), scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16)) / 1e9


def _fits(bytes_needed: int, device: torch.device) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return 2.5 * bytes_needed < free  # the cache, a dense copy for SDPA, and headroom


def _best(report: Report, name: str, case: DecodeCase | PrefillCase,
          configs: list[DecodeConfig] | list[PrefillConfig]) -> DecodeConfig | PrefillConfig:
    timings = [(_record(report, name, config, case.time(config)), i) for i, config in enumerate(configs)]
    return configs[min(timings)[1]]


def tune_decode(report: Report, device: torch.device, generator: torch.Generator,
                shape: AttentionShape) -> DecodeConfig:
    """Tile, warps and stages at batch 64 x 4k. Forced split counts are only reported (to
    check the automatic choice); the returned config keeps choosing per batch."""
    case = DecodeCase(64, 4096, shape, device, generator)
    best = _best(report, "decode 64x4096", case, DECODE_TUNING)
    _best(report, "decode 64x4096", case,
          [best, *(replace(best, num_splits=n) for n in (1, 2, 4, 8))])
    long_case = DecodeCase(1, 32768, shape, device, generator)
    _best(report, "decode 1x32768", long_case,
          [replace(best, num_splits=n) for n in (None, 8, 16, 32, 64, 128)])
    return best


def tune_prefill(report: Report, device: torch.device, generator: torch.Generator,
                 shape: AttentionShape) -> PrefillConfig:
    case = PrefillCase(4, 4096, 0, shape, device, generator)
    return _best(report, "prefill 4x4096", case, PREFILL_TUNING)


def _record(report: Report, name: str, config: object, timing: Timing) -> float:
    row = {"case": name, "config": repr(config), "ms": timing.ms, "rate": timing.rate}
    report.tuning.append(row)
    print(f"tune {name:16s} {timing.ms:8.4f} ms {timing.rate:9.1f}  {config!r}", flush=True)
    return timing.ms


def _time_fp8_cache_decode(batch: int, context: int, shape: AttentionShape, device: torch.device,
                           generator: torch.Generator, config: DecodeConfig) -> tuple[float, float]:
    """Graph-replayed ms and GB/s of the same decode over an fp8 e4m3 cache (half the bytes):
    kv_cache_dtype="fp8" against "auto", measured in the same run."""
    fp8_shape = replace(shape, cache_dtype=FP8_DTYPE)
    bytes_needed = DecodeCase.bytes_needed(batch, context, fp8_shape)
    copies = max(1, min(64, cdiv(ROTATE_BYTES, bytes_needed)))
    cases = [DecodeCase(batch, context, fp8_shape, device, generator) for _ in range(copies)]
    ms = time_in_graph([lambda c=c: c.run(config) for c in cases])
    return ms, cases[0].bytes_moved() / ms / 1e6


def bench_attention(report: Report, options: KernelBenchOptions, device: torch.device,
                    generator: torch.Generator, decode_config: DecodeConfig,
                    prefill_config: PrefillConfig) -> None:
    shape = AttentionShape()
    copy_gb_s = report.ceilings["copy_gb_s"]
    for batch in options.batches:
        for context in options.contexts:
            if not _fits(DecodeCase.bytes_needed(batch, context, shape), device):
                print(f"decode {batch}x{context}: skipped, does not fit")
                continue
            bytes_needed = DecodeCase.bytes_needed(batch, context, shape)
            copies = max(1, min(64, cdiv(ROTATE_BYTES, bytes_needed)))
            cases = [DecodeCase(batch, context, shape, device, generator) for _ in range(copies)]
            num_splits = cases[0].num_splits(decode_config)
            graph_ms = time_in_graph([lambda c=c: c.run(decode_config) for c in cases])
            gb_s = cases[0].bytes_moved() / graph_ms / 1e6
            eager, sdpa = cases[0].time(decode_config), cases[0].time_sdpa()
            del cases
            fp8_ms, fp8_gb_s = _time_fp8_cache_decode(batch, context, shape, device, generator,
                                                      decode_config)
            row = {"batch": batch, "context": context, "graph_ms": graph_ms, "gb_s": gb_s,
                   "pct_of_copy": 100 * gb_s / copy_gb_s, "eager_ms": eager.ms,
                   "num_splits": num_splits,
                   "sdpa_dense_ms": sdpa.ms, "sdpa_dense_gb_s": sdpa.rate,
                   "fp8_cache_graph_ms": fp8_ms, "fp8_cache_gb_s": fp8_gb_s}
            report.decode.append(row)
            print(f"decode b={batch:4d} ctx={context:6d} graph {graph_ms:8.4f} ms {gb_s:6.0f} GB/s "
                  f"({row['pct_of_copy']:5.1f}% of copy, splits {row['num_splits']:2d}) "
                  f"eager {eager.ms:8.4f} ms | SDPA dense {sdpa.ms:8.4f} ms {sdpa.rate:6.0f} GB/s "
                  f"| fp8 cache graph {fp8_ms:8.4f} ms {fp8_gb_s:6.0f} GB/s "
                  f"({graph_ms / fp8_ms:4.2f}x)", flush=True)
    peak = report.ceilings["matmul_bf16_tflop_s"]
    for batch, query_len, context in [(1, 2048, 0), (4, 4096, 0), (1, 16384, 0), (8, 512, 8192)]:
        case = PrefillCase(batch, query_len, context, shape, device, generator)
        ours, sdpa = case.time(prefill_config), case.time_sdpa()
        row = {"batch": batch, "query_len": query_len, "context": context, "ms": ours.ms,
               "tflop_s": ours.rate, "pct_of_matmul": 100 * ours.rate / peak,
               "sdpa_dense_ms": sdpa.ms if sdpa else None, "sdpa_dense_tflop_s": sdpa.rate if sdpa else None}
        report.prefill.append(row)
        sdpa_text = f"SDPA dense {sdpa.ms:8.4f} ms {sdpa.rate:6.1f} TFLOP/s" if sdpa else ""
        print(f"prefill b={batch} q={query_len:5d} ctx={context:5d} {ours.ms:8.4f} ms "
              f"{ours.rate:6.1f} TFLOP/s ({row['pct_of_matmul']:4.1f}% of matmul) | {sdpa_text}",
              flush=True)
        del case


def run_benchmarks(options: KernelBenchOptions) -> int:
    if not torch.cuda.is_available():
        print("pagefleet bench kernels needs a CUDA GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    report = Report(environment={
        "card": props.name, "sms": props.multi_processor_count, "torch": torch.__version__,
        "triton": triton.__version__, "cuda": torch.version.cuda, "command": " ".join(sys.argv)})
    print(report.environment, flush=True)
    if options.run_tests:
        report.tests_returncode = run_kernel_tests()
    report.ceilings = {"copy_gb_s": measure_copy_gb_s(device),
                       "matmul_bf16_tflop_s": measure_matmul_tflop_s(device)}
    print(report.ceilings, flush=True)
    generator = torch.Generator(device=device).manual_seed(0)
    decode_config, prefill_config = DecodeConfig(), PrefillConfig()
    if options.tune:
        decode_config = tune_decode(report, device, generator, AttentionShape())
        prefill_config = tune_prefill(report, device, generator, AttentionShape())
        report.environment |= {"decode_config": repr(decode_config), "prefill_config": repr(prefill_config)}
        print(f"tuned: {decode_config!r} {prefill_config!r}", flush=True)
    bench_attention(report, options, device, generator, decode_config, prefill_config)
    if options.json_path:
        options.json_path.write_text(json.dumps(asdict(report), indent=1, default=str))
    return 1 if report.tests_returncode else 0
