"""Item representations shared by every model family: item text, LLM item embeddings (and, later,
semantic IDs)."""
