"""Human-part segmentation (PASCAL-Part): background plus six parts, ignore 255."""

from __future__ import annotations

from mtl_keras.tasks._common import classification_task
from mtl_keras.tasks.base import TaskSpec

PASCAL_PARTS = ("background", "head", "torso", "upper_arm", "lower_arm", "upper_leg", "lower_leg")


def human_parts(num_classes: int = 7, class_names: tuple[str, ...] | None = None) -> TaskSpec:
    """Part segmentation as in PASCAL-Context's multi-task split (Maninis et al., CVPR 2019).

    Images without people carry an all-255 label, so they add nothing to the loss or to the mIoU.

    Example:
        >>> human_parts().num_classes
        7
    """
    if class_names is None and num_classes == len(PASCAL_PARTS):
        class_names = PASCAL_PARTS
    return classification_task("human_parts", num_classes, class_names, score_labelled_only=True)
