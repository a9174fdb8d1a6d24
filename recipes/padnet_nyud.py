"""PAD-Net on NYUD-v2 with the survey's HRNet-18 setting (Vandenhende et al., TPAMI 2022, Sec. 5).

Four tasks at 480x640: semseg (40 classes) and depth, plus normals and edges, which the survey
uses as auxiliary tasks; here they are full tasks (the trainer supervises deep-supervision outputs
of predicted tasks only), weighted 10 and 50 as in the survey's fixed loss weights. Adam 1e-4,
weight decay 1e-4, poly schedule (power 0.9), batch 8, 100 epochs. The other decoder-focused NYUD
recipes replace the architecture of this one.
"""

from mtl_keras.training.recipe import Recipe

#: the survey's fixed loss weights on NYUD-v2 (normals and edges are its auxiliary tasks)
NYUD_WEIGHTS = {"semseg": 1.0, "depth": 1.0, "normals": 10.0, "edges": 50.0}


def recipe() -> Recipe:
    return Recipe(
        name="padnet_nyud",
        dataset="nyud",
        tasks=("semseg", "depth", "normals", "edges"),
        image_size=(480, 640),
        train_examples=None,
        val_examples=None,
        architecture="padnet",
        backbone="hrnet18",
        head="hrnet",
        balancer="fixed",
        balancer_kwargs={"weights": NYUD_WEIGHTS},
        optimizer="adam",
        learning_rate=1e-4,
        weight_decay=1e-4,
        schedule="poly",
        poly_power=0.9,
        batch_size=8,
        epochs=100,
    )
