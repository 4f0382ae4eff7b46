"""Accuracies beyond top-1: REFILLED's generalized evaluation across tasks."""

import torch


def generalized_accuracy(logits: torch.Tensor, labels: torch.Tensor, old_classes: list[int]) -> dict:
    """Accuracy on the test samples of old classes (shared with the teacher) and of new ones, both
    predicted over the student's whole label space, and their harmonic mean."""
    old = torch.isin(labels, torch.tensor(old_classes, dtype=labels.dtype))
    correct = logits.argmax(1) == labels
    acc_old = correct[old].float().mean().item() if old.any() else float("nan")
    acc_new = correct[~old].float().mean().item() if (~old).any() else float("nan")
    harmonic = 2 * acc_old * acc_new / (acc_old + acc_new) if acc_old + acc_new > 0 else 0.0
    return {"accuracy_old": acc_old, "accuracy_new": acc_new, "harmonic_mean": harmonic}
