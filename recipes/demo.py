"""The main job: hard sharing on synthetic scenes, all six tasks, on CPU in a few minutes."""

from mtl_keras.training.recipe import Recipe


def recipe() -> Recipe:
    return Recipe(
        name="demo",
        image_size=(64, 64),
        train_examples=1024,
        val_examples=128,
        architecture="hard_sharing",
        backbone="resnet18",
        backbone_kwargs={"width": 16, "output_stride": 16},
        head="hrnet",
        balancer="fixed",
        optimizer="adam",
        learning_rate=2e-3,
        weight_decay=1e-4,
        batch_size=8,
        epochs=8,
    )
