"""Async jobs: submit, poll, cancel, list."""
