"""The DCASE 2019 Task 2 reference lwlrap: slow and plain, kept to check the fast path against.

Written from the public definition (the DCASE 2019 Task 2 / FAT2019 lwlrap notebook): one row at a
time, classes ranked by argsort, precision at each positive = hits so far / rank. Ties are broken by
argsort's order, so it agrees with :func:`stacker.metrics.lwlrap` on tie-free scores only.
"""

import numpy as np


def _one_sample_positive_class_precisions(scores, truth):
    num_classes = scores.shape[0]
    pos_class_indices = np.flatnonzero(truth > 0)
    if not len(pos_class_indices):
        return pos_class_indices, np.zeros(0)
    retrieved_classes = np.argsort(scores)[::-1]
    class_rankings = np.zeros(num_classes, dtype=int)
    class_rankings[retrieved_classes] = range(num_classes)
    retrieved_class_true = np.zeros(num_classes, dtype=bool)
    retrieved_class_true[class_rankings[pos_class_indices]] = True
    retrieved_cumulative_hits = np.cumsum(retrieved_class_true)
    precision_at_hits = (retrieved_cumulative_hits[class_rankings[pos_class_indices]]
                         / (1 + class_rankings[pos_class_indices].astype(float)))
    return pos_class_indices, precision_at_hits


def calculate_per_class_lwlrap(truth, scores):
    """Per-class lwlrap and class weights, shape (n_classes,) each. truth, scores: (n_rows, n_classes)."""
    num_samples, num_classes = scores.shape
    precisions = np.zeros((num_samples, num_classes))
    for sample in range(num_samples):
        pos, precision_at_hits = _one_sample_positive_class_precisions(scores[sample], truth[sample])
        precisions[sample, pos] = precision_at_hits
    labels_per_class = np.sum(truth > 0, axis=0)
    weight_per_class = labels_per_class / float(np.sum(labels_per_class))
    per_class = np.sum(precisions, axis=0) / np.maximum(1, labels_per_class)
    return per_class, weight_per_class


def reference_lwlrap(truth, scores) -> float:
    per_class, weight = calculate_per_class_lwlrap(truth, scores)
    return float(np.sum(per_class * weight))
