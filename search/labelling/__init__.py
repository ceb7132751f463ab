"""Labelling: the labels, the labeller and its methods (the k-NN vote, the learned head), the
labelling queue and its clusters, and the evaluation that measures them."""

__all__ = [
    "calibration", "compare", "debouncer", "evaluate", "head_store", "labeller", "labels", "learned_head",
    "queue_clusters", "queue_order", "vote",
]
