"""The SID LLM recommender's pieces: SID tokens in a causal LM's vocabulary, prompts, GRPO.

The model is `genrec.llm.sid_llm.SIDLLM` (its config: `genrec.llm.sid_llm_config`); it trains (SFT)
through the shared trainer. This package builds on `genrec.models`, never the other way round.
"""
