"""Printing benchmark summaries: a text block per run and a side-by-side overhead table."""

from __future__ import annotations

from pagefleet.platform.bench.runner import BenchSummary, Percentiles

_LATENCIES = (("TTFT", "ttft"), ("TPOT", "tpot"), ("ITL", "itl"), ("E2E latency", "e2e"))


def format_summary(title: str, s: BenchSummary) -> str:
    lines = [f"==== {title} ====",
             f"completed / failed:          {s.completed} / {s.failed}",
             f"duration (s):                {s.duration_s:.2f}",
             f"request throughput (req/s):  {s.request_throughput:.3f}",
             f"output throughput (tok/s):   {s.output_throughput:.2f}",
             f"total throughput (tok/s):    {s.total_token_throughput:.2f}"]
    for label, name in _LATENCIES:
        p: Percentiles = getattr(s, name)
        lines.append(f"{label + ' (ms)':<28} mean {p.mean:9.1f}  p50 {p.p50:9.1f}  "
                     f"p90 {p.p90:9.1f}  p99 {p.p99:9.1f}")
    if s.first_error:
        lines.append(f"first error: {s.first_error}")
    return "\n".join(lines)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b else "n/a"


def overhead_table(platform: BenchSummary, direct: BenchSummary) -> str:
    """Markdown: the platform (gateway + Redis + worker) against the in-process engine."""
    rows = [("request throughput (req/s)", platform.request_throughput, direct.request_throughput),
            ("output throughput (tok/s)", platform.output_throughput, direct.output_throughput)]
    for label, name in _LATENCIES:
        for stat in ("mean", "p50", "p99"):
            rows.append((f"{label} {stat} (ms)", getattr(getattr(platform, name), stat),
                         getattr(getattr(direct, name), stat)))
    lines = ["| metric | platform | in-process engine | platform / engine |",
             "|---|---:|---:|---:|"]
    lines += [f"| {label} | {a:.2f} | {b:.2f} | {_ratio(a, b)} |" for label, a, b in rows]
    lines.append(f"| completed / failed | {platform.completed} / {platform.failed} | "
                 f"{direct.completed} / {direct.failed} | |")
    return "\n".join(lines)
