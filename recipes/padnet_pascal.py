"""PAD-Net on PASCAL-Context with the survey's HRNet-18 setting (Vandenhende et al., TPAMI 2022).

Five tasks at 512x512: semseg (21 classes), human parts (7), saliency, normals and edges with
the survey's fixed loss weights; Adam 1e-4, weight decay 1e-4, poly schedule (power 0.9),
batch 8, 100 epochs. The other decoder-focused PASCAL recipes replace the architecture of this one.
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
        name="padnet_pascal",
        dataset="pascal_context",
        tasks=("semseg", "human_parts", "saliency", "normals", "edges"),
        image_size=(512, 512),
        train_examples=None,
        val_examples=None,
        architecture="padnet",
        backbone="hrnet18",
        head="hrnet",
        balancer="fixed",
        balancer_kwargs={"weights": PASCAL_WEIGHTS},
        optimizer="adam",
        learning_rate=1e-4,
        weight_decay=1e-4,
        schedule="poly",
        poly_power=0.9,
        batch_size=8,
        epochs=100,
    )
