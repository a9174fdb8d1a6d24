"""PAP-Net on NYUD-v2 with the survey's HRNet-18 setting.

PAP-Net has no auxiliary-task form, so normals and edges are full tasks here (four tasks, the
survey's fixed weights 1, 1, 10, 50). The affinities run at 1/16 of 480x640, i.e. 30x40 = 1,200
pixels (5.8 MB per affinity matrix and image); ``--set head_kwargs='{"affinity_stride": 8}'``
quadruples the pixels and multiplies that memory by 16 (see ``mtl_keras.architectures.papnet``).
"""

from mtl_keras.recipes import _survey


def recipe():
    return _survey.nyud(
        "papnet_nyud",
        tasks=("semseg", "depth", "normals", "edges"),
        backbone="hrnet18",
        architecture="papnet",
        head_kwargs={"affinity_stride": 16},
    )
