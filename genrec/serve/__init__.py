"""Serving: export of embeddings (and, later, the ANN index and the recommend service)."""
