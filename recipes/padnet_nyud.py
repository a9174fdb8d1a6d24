"""PAD-Net on NYUD-v2 with the survey's HRNet-18 setting (Vandenhende et al., TPAMI 2022, Sec. 5).

Semseg (40 classes) and depth at 480x640 are the tasks; normals and edges are auxiliary tasks, as
in the survey: they get initial predictions, deep supervision with the survey's fixed weights 10
and 50 and send distillation messages, but have no final head and are not evaluated. Adam 1e-4,
weight decay 1e-4, poly schedule (power 0.9), batch 8, 100 epochs. ``mtinet_nyud`` replaces the
architecture of this one.
"""

from mtl_keras.recipes import _survey


def recipe():
    return _survey.nyud(
        "padnet_nyud",
        tasks=("semseg", "depth"),
        backbone="hrnet18",
        architecture="padnet",
        auxiliary_tasks=("normals", "edges"),
        auxiliary_weights={t: _survey.NYUD_WEIGHTS[t] for t in ("normals", "edges")},
    )
