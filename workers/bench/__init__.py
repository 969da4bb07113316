"""Benchmarks that need the engine (torch); the CLI imports them lazily."""
