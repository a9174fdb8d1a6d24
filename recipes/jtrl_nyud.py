"""JTRL on NYUD-v2 with the survey's HRNet-18 setting, on the two tasks JTRL was designed for.

JTRL (Zhang et al., ECCV 2018) alternates semantic segmentation and depth; the builder accepts
more tasks (round-robin), which ``--set tasks=semseg,depth,normals,edges`` selects.
"""

from mtl_keras.recipes import _survey


def recipe():
    return _survey.nyud("jtrl_nyud", backbone="hrnet18", architecture="jtrl")
