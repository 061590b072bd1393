"""Metrics of a ranker's per-task predictions on (user, candidate) impressions: AUC, GAUC, log loss, RMSE.

A ranker predicts, for each impression, the probability of a binary action (`like`) or a value
(`rating`). These metrics judge those predictions directly, where the retrieval metrics
(`genrec.eval.metrics`) judge where a target lands in a ranking of the whole catalogue.
"""

from __future__ import annotations

import numpy as np


def average_ranks(values: np.ndarray) -> np.ndarray:
    """[I] float64 1-based ranks of `values` [I], tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # the highest rank of each distinct value
    return ((last - counts + 1 + last) / 2.0)[inverse.reshape(-1)]


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random
    negative, ties counting one half (Mann-Whitney U from average ranks).

    labels: [I] {0, 1}; scores: [I] float. NaN when either class is absent.
    """
    labels = np.asarray(labels).astype(bool)
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = average_ranks(np.asarray(scores, dtype=np.float64))
    u = ranks[labels].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> tuple[float, int]:
    """Group AUC: the AUC of each user's own impressions, averaged over the users who have both
    classes (every such user weighs the same). Returns (GAUC, number of users averaged).

    users: [I] int; labels: [I] {0, 1}; scores: [I] float.
    """
    users, labels, scores = np.asarray(users), np.asarray(labels), np.asarray(scores)
    order = np.argsort(users, kind="stable")
    users, labels, scores = users[order], labels[order], scores[order]
    bounds = np.flatnonzero(np.diff(users)) + 1
    values = [auc(lab, sco) for lab, sco in zip(np.split(labels, bounds), np.split(scores, bounds))]
    values = [v for v in values if not np.isnan(v)]
    return (float(np.mean(values)) if values else float("nan")), len(values)


def log_loss(labels: np.ndarray, probabilities: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of `probabilities` [I] (clipped to [eps, 1 - eps]) against `labels` [I]."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def rmse(targets: np.ndarray, predictions: np.ndarray) -> float:
    """Root mean squared error of `predictions` [I] against `targets` [I]."""
    diff = np.asarray(predictions, dtype=np.float64) - np.asarray(targets, dtype=np.float64)
    return float(np.sqrt(np.mean(diff**2)))
