"""JTRL on NYUD-v2: ``padnet_nyud``'s setting on the two tasks JTRL was designed for.

JTRL (Zhang et al., ECCV 2018) alternates semantic segmentation and depth; the builder accepts
more tasks (round-robin), which ``--set tasks=semseg,depth,normals,edges`` selects.
"""

import dataclasses

from recipes.padnet_nyud import NYUD_WEIGHTS
from recipes.padnet_nyud import recipe as padnet_nyud


def recipe():
    tasks = ("semseg", "depth")
    return dataclasses.replace(
        padnet_nyud(),
        name="jtrl_nyud",
        architecture="jtrl",
        tasks=tasks,
        balancer_kwargs={"weights": {t: NYUD_WEIGHTS[t] for t in tasks}},
    )
