"""MTAN on PASCAL-Context with the survey's ResNet-18 setting (its ``resnet18/mtan.yml``).

Five tasks at 512x512 (semseg 21 classes, human parts 7, saliency, normals, edges) with the
survey's fixed loss weights, dilated ResNet-18 (output stride 8) and DeepLab-v3 heads; SGD
(momentum 0.9) 5e-3, weight decay 1e-4, poly schedule (power 0.9), batch 6, 100 epochs.
"""

from mtl_keras.training.recipe import Recipe

#: the survey's fixed loss weights on PASCAL-Context
PASCAL_WEIGHTS = {
    "semseg": 1.0,
    "human_parts": 2.0,
    "saliency": 5.0,
    "edges": 50.0,
    "normals": 10.0,
}


def recipe() -> Recipe:
    return Recipe(
        name="mtan_pascal",
        dataset="pascal_context",
        tasks=("semseg", "human_parts", "saliency", "normals", "edges"),
        image_size=(512, 512),
        train_examples=None,
        val_examples=None,
        architecture="mtan",
        backbone="resnet18",
        backbone_kwargs={"output_stride": 8},
        head="deeplab",
        balancer="fixed",
        balancer_kwargs={"weights": PASCAL_WEIGHTS},
        optimizer="sgd",
        learning_rate=5e-3,
        weight_decay=1e-4,
        schedule="poly",
        poly_power=0.9,
        batch_size=6,
        epochs=100,
    )
