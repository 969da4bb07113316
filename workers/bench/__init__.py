"""Benchmarks that need the engine (torch; the CLI imports them lazily), and the model-free
synthetic engine, a benchmark device that imports no torch."""
