"""The main job: hard sharing on synthetic scenes, all six tasks, on CPU in a few minutes.

The synthetic base setting of :func:`._survey.synthetic` with hard sharing.
"""

from mtl_keras.recipes import _survey


def recipe():
    return _survey.synthetic("demo", architecture="hard_sharing")
