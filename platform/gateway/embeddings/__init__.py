"""POST /v1/embeddings: OpenAI's embeddings endpoint for registry models with `task: embed`."""
