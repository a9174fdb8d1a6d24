"""MTAN on the synthetic scenes, all six tasks, on CPU in minutes.

ResNet-18 (width 16, output stride 16) with HRNet-style heads on 64x64 images, as the demo, and
the survey's optimiser (Adam, weight decay 1e-4, poly schedule, batch 8) with the demo's learning
rate (the models train from scratch here). The other encoder-focused synthetic recipes replace the
architecture of this one.
"""

from mtl_keras.training.recipe import Recipe


def recipe() -> Recipe:
    return Recipe(
        name="mtan_synthetic",
        image_size=(64, 64),
        train_examples=1024,
        val_examples=128,
        architecture="mtan",
        backbone="resnet18",
        backbone_kwargs={"width": 16, "output_stride": 16},
        head="hrnet",
        balancer="fixed",
        optimizer="adam",
        learning_rate=2e-3,
        weight_decay=1e-4,
        schedule="poly",
        poly_power=0.9,
        batch_size=8,
        epochs=8,
    )
