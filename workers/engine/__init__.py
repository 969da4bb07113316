"""The paged, continuous-batching engine."""
