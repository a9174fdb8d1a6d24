"""Parameters and FLOPs of the transformer-era decoders on ViT-S/B/L at NYUD-v2's 448x576.

Usage: ``python benchmarks/transformer_complexity.py [--archs dpt,invpt,mlore] [--vits S,B,L]``.

Builds each architecture (`mtl_keras.architectures.build`, default decoder options) on a
keras-hub ``ViTBackbone`` of the standard configuration with 16-pixel patches, sized for
448x576, for NYUD-v2's tasks (semseg with 40 classes, depth, normals, edges), and prints a
markdown table of `count_params` and of `count_flops` (one image, a multiply-add counted as 2).
Nothing is downloaded: the encoders are built from their arguments with random weights.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from mtl_keras import architectures  # noqa: E402
from mtl_keras.metrics import count_flops, count_params  # noqa: E402
from mtl_keras.tasks import resolve  # noqa: E402

#: ViT-S/16, ViT-B/16 and ViT-L/16 (Dosovitskiy et al., ICLR 2021; Touvron et al. for ViT-S)
VITS = {
    "S": {"num_layers": 12, "num_heads": 6, "hidden_dim": 384, "mlp_dim": 1536},
    "B": {"num_layers": 12, "num_heads": 12, "hidden_dim": 768, "mlp_dim": 3072},
    "L": {"num_layers": 24, "num_heads": 16, "hidden_dim": 1024, "mlp_dim": 4096},
}
IMAGE_SIZE = (448, 576)


def measure(arch: str, vit: str) -> tuple[int, int]:
    """(params, FLOPs) of ``arch`` on ViT-``vit`` for NYUD-v2's four tasks at 448x576."""
    keras.backend.clear_session()
    specs = resolve(["semseg", "depth", "normals", "edges"], {"semseg": {"num_classes": 40}})
    network = architectures.build(
        arch,
        list(specs.values()),
        backbone="keras_hub.ViTBackbone",
        backbone_kwargs={**VITS[vit], "patch_size": 16, "image_shape": (*IMAGE_SIZE, 3)},
        image_size=IMAGE_SIZE,
    )
    return count_params(network)["params"], count_flops(network, (*IMAGE_SIZE, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="dpt,invpt,mlore")
    parser.add_argument("--vits", default="S,B,L")
    args = parser.parse_args()
    vits = args.vits.split(",")
    print("| architecture | " + " | ".join(f"ViT-{v}/16 params, GFLOPs" for v in vits) + " |")
    print("|---|" + "---:|" * len(vits))
    for arch in args.archs.split(","):
        cells = [f"{p:,}, {f / 1e9:.1f}" for p, f in (measure(arch, v) for v in vits)]
        print(f"| {arch} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
