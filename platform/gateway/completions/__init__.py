"""OpenAI completions and chat completions."""
