"""Serving a trained run: `Recommender` (top k in raw ids, any model family), batch inference to
Parquet (`batch`), the FAISS index (`index`), the HTTP service (`app`) and the embedding export."""

from genrec.serve.recommender import Query, Recommendation, RecommendedItem, Recommender

__all__ = ["Query", "RecommendedItem", "Recommendation", "Recommender"]
