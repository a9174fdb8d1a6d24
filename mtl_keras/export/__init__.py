"""Deployment: SavedModels that TF Serving loads."""

from mtl_keras.export.saved_model import (
    export_saved_model,
    served_outputs,
    serving_function,
)

__all__ = ["export_saved_model", "served_outputs", "serving_function"]
