"""The demo with MGDA-UB balancing (gradients of the shared representation)."""

import dataclasses

from mtl_keras.recipes.demo import recipe as demo


def recipe():
    return dataclasses.replace(
        demo(), name="demo_mgda", balancer="mgda", gradient_source="representation"
    )
