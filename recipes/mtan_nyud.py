"""MTAN on NYUD-v2 with the survey's ResNet-50 setting (Vandenhende et al., TPAMI 2022, Sec. 5).

Semseg (40 classes) and depth at 480x640, fixed loss weights 1 and 1, dilated ResNet-50 (output
stride 8) with a DeepLab-v3 head per task; Adam 1e-4, weight decay 1e-4, poly schedule (power 0.9),
batch 8, 100 epochs (the survey's ``configs/nyud/resnet50/mtan.yml``). The Adam-trained
encoder-focused NYUD recipes (branched, ASTMT) replace the architecture of this one.
"""

from mtl_keras.training.recipe import Recipe

#: the survey's fixed loss weights of the two NYUD-v2 main tasks
NYUD_WEIGHTS = {"semseg": 1.0, "depth": 1.0}


def recipe() -> Recipe:
    return Recipe(
        name="mtan_nyud",
        dataset="nyud",
        tasks=("semseg", "depth"),
        image_size=(480, 640),
        train_examples=None,
        val_examples=None,
        architecture="mtan",
        backbone="resnet50",
        backbone_kwargs={"output_stride": 8},
        head="deeplab",
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
