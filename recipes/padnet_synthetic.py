"""PAD-Net on the synthetic scenes, all six tasks, at 64x64 on CPU.

HRNet-18 and the survey's optimiser (Adam, weight decay 1e-4, poly schedule, batch 8) with the
demo's learning rate (the models train from scratch here) and a narrower decoder (64 channels).
The other decoder-focused synthetic recipes replace the architecture of this one. On 2 CPU cores
the first step (graph tracing) takes 2-4 minutes and the 1,024 steps 11 (PAP-Net) to 44
(MTI-Net) minutes; see ``docs/decoder_focused.md``.
"""

from mtl_keras.recipes import _survey


def recipe():
    return _survey.synthetic(
        "padnet_synthetic",
        architecture="padnet",
        backbone="hrnet18",
        backbone_kwargs={},
        head_kwargs={"channels": 64},
    )
