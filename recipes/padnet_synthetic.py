"""PAD-Net on the synthetic scenes, all six tasks, at 64x64 on CPU.

HRNet-18 and the survey's optimiser (Adam, weight decay 1e-4, poly schedule, batch 8) with the
demo's learning rate (the models train from scratch here) and a narrower decoder (64 channels).
The other decoder-focused synthetic recipes replace the architecture of this one. On 2 CPU cores
the first step (graph tracing) takes 2-4 minutes and the 1,024 steps 11 (PAP-Net) to 44
(MTI-Net) minutes; see ``docs/decoder_focused.md``.
"""

from mtl_keras.training.recipe import Recipe


def recipe() -> Recipe:
    return Recipe(
        name="padnet_synthetic",
        image_size=(64, 64),
        train_examples=1024,
        val_examples=128,
        architecture="padnet",
        backbone="hrnet18",
        head="hrnet",
        head_kwargs={"channels": 64},
        balancer="fixed",
        optimizer="adam",
        learning_rate=2e-3,
        weight_decay=1e-4,
        schedule="poly",
        poly_power=0.9,
        batch_size=8,
        epochs=8,
    )
