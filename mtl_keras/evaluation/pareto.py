"""The Pareto plot of a study: Δ_MTL against FLOPs, with the front of non-dominated runs."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont


def pareto_front(rows: Sequence[dict]) -> list[dict]:
    """The rows no other row dominates: none has FLOPs <= and Δ_MTL >= with one strictly."""
    points = [r for r in rows if r.get("flops") and r.get("delta") is not None]

    def dominated(p):
        return any(
            q["flops"] <= p["flops"]
            and q["delta"] >= p["delta"]
            and (q["flops"] < p["flops"] or q["delta"] > p["delta"])
            for q in points
        )

    return sorted((p for p in points if not dominated(p)), key=lambda r: r["flops"])


def pareto_chart(rows: Sequence[dict], path: str | os.PathLike, *, size=(720, 480)) -> str:
    """A PNG scatter of Δ_MTL (mean, ± std bars) against FLOPs (log scale), the Pareto front
    joined and labelled; rows of one FLOPs count (a balancer on the same network) share a column
    labelled by the group with the highest Δ_MTL there."""
    points = [
        r
        for r in rows
        if r.get("flops") and r.get("delta") is not None and r.get("kind") != "single_task"
    ]
    width, height = size
    left, right, top, bottom = 70, 20, 30, 50
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text(
        (8, 8),
        "Delta_MTL (%) against GFLOPs per image (log scale); ±1 std over seeds",
        fill="black",
        font=font,
    )
    if points:
        xs = [math.log10(r["flops"] / 1e9) for r in points]
        lows = [r["delta"] - (r["delta_std"] or 0.0) for r in points]
        highs = [r["delta"] + (r["delta_std"] or 0.0) for r in points]
        x0, x1 = min(xs), max(xs)
        x0, x1 = (
            (x0 - 0.05, x1 + 0.05)
            if x1 - x0 < 0.1
            else (x0 - 0.05 * (x1 - x0), x1 + 0.05 * (x1 - x0))
        )
        y0, y1 = min(lows + [0.0]), max(highs + [0.0])
        pad = 0.05 * max(y1 - y0, 1e-6)
        y0, y1 = y0 - pad, y1 + pad

        def at(x, y):
            return (
                left + (x - x0) / (x1 - x0) * (width - left - right),
                top + (y1 - y) / (y1 - y0) * (height - top - bottom),
            )

        axis = (120, 120, 120)
        draw.line([at(x0, 0.0), at(x1, 0.0)], fill=(200, 200, 200))
        draw.line(
            [(left, top), (left, height - bottom), (width - right, height - bottom)], fill=axis
        )
        for k in range(5):
            y = y0 + (y1 - y0) * k / 4
            _, py = at(x0, y)
            draw.text((6, py - 6), f"{y:+.1f}", fill="black", font=font)
            x = x0 + (x1 - x0) * k / 4
            px, _ = at(x, y0)
            draw.text((px - 14, height - bottom + 6), f"{10**x:.3g}", fill="black", font=font)
        front = pareto_front(points)
        if len(front) > 1:
            draw.line(
                [at(math.log10(r["flops"] / 1e9), r["delta"]) for r in front],
                fill=(46, 139, 87),
                width=2,
            )
        best_at: dict[int, dict] = {}
        for r in points:
            if r["flops"] not in best_at or r["delta"] > best_at[r["flops"]]["delta"]:
                best_at[r["flops"]] = r
        for r, x in zip(points, xs):
            px, py = at(x, r["delta"])
            std = r["delta_std"] or 0.0
            _, plo = at(x, r["delta"] - std)
            _, phi = at(x, r["delta"] + std)
            on_front = r in front
            color = (46, 139, 87) if on_front else (70, 100, 180)
            draw.line([(px, phi), (px, plo)], fill=color)
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=color)
            if on_front or best_at[r["flops"]] is r:
                draw.text((px + 5, py - 6), r["group"], fill="black", font=font)
        draw.text((width // 2 - 40, height - 20), "GFLOPs", fill="black", font=font)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    image.save(path, format="PNG")
    return os.fspath(path)
