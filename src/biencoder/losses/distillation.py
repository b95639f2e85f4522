"""MSELoss: the student's embedding of a text against a teacher's embedding of the same text.

With the base model as the teacher, it holds a fine-tune close to where it started on general text
(self-distillation), while another dataset's loss moves it towards a domain. The teacher's
embeddings are labels computed once, outside the training step (``biencoder.training.teacher``).
The maths is :func:`mse_distillation_loss`, equal to sentence-transformers' ``MSELoss``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from biencoder.losses.common import Model, _full_precision
from biencoder.unpad import Column, embed_column


def mse_distillation_loss(students: Sequence[Tensor], teacher: Tensor) -> Tensor:
    """Mean over the text columns of the mean squared error between each column's embeddings
    [b, d] and the teacher's: ``teacher`` [b, d] (the same target for every column) or [b, c, d]
    (one per column)."""
    if not students:
        raise ValueError("expected at least one column of student embeddings")
    if teacher.ndim == 2:
        targets = [teacher] * len(students)
    elif teacher.ndim == 3 and teacher.shape[1] == len(students):
        targets = [teacher[:, i] for i in range(len(students))]
    else:
        raise ValueError(
            f"teacher embeddings must be [batch, dim] or [batch, {len(students)}, dim], "
            f"got {tuple(teacher.shape)}"
        )
    losses = []
    for student, target in zip(students, targets, strict=True):
        if student.shape != target.shape:
            raise ValueError(
                f"student {tuple(student.shape)} and teacher {tuple(target.shape)} differ in shape"
            )
        losses.append(F.mse_loss(student, target.to(student.device, student.dtype)))
    return sum(losses[1:], losses[0]) / len(losses)


class MSELoss(nn.Module):
    """(text[, text ...]) columns with teacher embeddings as labels -> :func:`mse_distillation_loss`."""

    needs_labels = True

    def __init__(self, model: Model, teacher_name: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.teacher_name = teacher_name

    def embed(self, features: Column) -> Tensor:
        return embed_column(self.model, features)

    def forward(self, features: Sequence[Column], labels: Tensor | None = None) -> Tensor:
        if labels is None:
            raise ValueError("MSELoss needs the teacher's embeddings as labels")
        students = [self.embed(f) for f in features]
        with _full_precision(students[0]):
            return mse_distillation_loss([s.float() for s in students], labels.float())

    def forward_backward(self, features: Sequence[Column], labels: Tensor | None = None) -> Tensor:
        loss = self(features, labels)
        loss.backward()
        return loss.detach()

    def config_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher_name} if self.teacher_name else {}

    @property
    def card_name(self) -> str:
        return "MSELoss"
