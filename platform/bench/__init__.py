"""Serving benchmarks: an OpenAI-compatible streaming HTTP client with vLLM's latency metrics.

No torch here: the in-process engine side of `pagefleet bench serve --overhead` lives in the
CLI command, which imports the engine lazily.
"""
