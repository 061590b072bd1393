"""Metrics and the full-ranking evaluator, shared by every model."""

from genrec.eval.evaluator import EvalBatch, Scorer, evaluate
from genrec.eval.metrics import DEFAULT_KS, RankMetrics, pessimistic_ranks

__all__ = ["DEFAULT_KS", "EvalBatch", "RankMetrics", "Scorer", "evaluate", "pessimistic_ranks"]
