"""Models. Every model's scorer plugs into the same evaluator (`genrec.eval`)."""

from genrec.models.popularity import Popularity

__all__ = ["Popularity"]
