"""The SID LLM recommender's pieces: SID tokens in a causal LM's vocabulary, prompts, GRPO.

The model itself is `genrec.models.sid_llm.SIDLLM`; it trains (SFT) through the shared trainer.
"""
