"""mtl_keras."""
