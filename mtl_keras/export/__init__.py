"""Deployment: SavedModels that TF Serving loads."""

from mtl_keras.export.saved_model import export_saved_model, serving_function

__all__ = ["export_saved_model", "serving_function"]
