"""/v1/responses: OpenAI\x27s Responses API on top of chat completions."""
