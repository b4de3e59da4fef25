"""Building blocks of the distillation methods: losses, alignment, discriminators."""

from meal.core.frozen import cast_frozen, frozen_input, frozen_mode, mean_teacher_probs, teacher_logits, usable
from meal.methods.components.alignment import POOL_KINDS, Aligner, Pool, align, align_reference, check_pool
from meal.methods.components.discriminator import Discriminator, discriminator_loss, generator_loss
from meal.methods.components.grl import GradReverse, grad_reverse
from meal.methods.components.similarity import (
    SIMILARITY_KINDS,
    Similarity,
    check_similarity_kind,
    kl_to_probs,
    similarity_loss,
    soft_cross_entropy,
    weighted_similarity_loss,
)
from meal.methods.components.teacher_selection import SELECTION_MODES, TeacherSelection, TeacherSelector

__all__ = [
    "POOL_KINDS",
    "SELECTION_MODES",
    "SIMILARITY_KINDS",
    "Aligner",
    "Discriminator",
    "GradReverse",
    "Pool",
    "Similarity",
    "TeacherSelection",
    "TeacherSelector",
    "align",
    "align_reference",
    "cast_frozen",
    "check_pool",
    "check_similarity_kind",
    "discriminator_loss",
    "frozen_input",
    "frozen_mode",
    "generator_loss",
    "grad_reverse",
    "kl_to_probs",
    "mean_teacher_probs",
    "similarity_loss",
    "soft_cross_entropy",
    "teacher_logits",
    "usable",
    "weighted_similarity_loss",
]
