"""The catalog of served models: GET /v1/models and /v1/models/{id}."""
