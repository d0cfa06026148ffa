"""The detector card's figure as SVG, drawn with the standard library alone.

`adae-stream train` runs on a plain install, where matplotlib (a demo extra) is absent: a card that
linked a PNG it could not write was a broken card. SVG is text, renders in every browser and Markdown
viewer, and two panels of lines and bars need no plotting library: the training curve, and the score
distributions of training and held-out clean data with the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

PANEL_W, PANEL_H, MARGIN = 420.0, 260.0, 48.0
COLOURS = ("#1f77b4", "#ff7f0e")
BINS = 60


def _scale(values: np.ndarray, lo: float, hi: float, out_lo: float, out_hi: float) -> np.ndarray:
    span = hi - lo if hi > lo else 1.0
    return out_lo + (values - lo) / span * (out_hi - out_lo)


def _axes(x0: float, title: str, xlabel: str, x_range: tuple[float, float], y_max: float) -> list[str]:
    left, right, top, bottom = x0 + MARGIN, x0 + PANEL_W - 10, 30.0, PANEL_H - 36
    parts = [
        f'<text x="{x0 + PANEL_W / 2:.1f}" y="18" text-anchor="middle" font-size="14">{escape(title)}</text>',
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#333"/>',
        f'<text x="{(left + right) / 2:.1f}" y="{PANEL_H - 6}" text-anchor="middle" font-size="12">'
        f"{escape(xlabel)}</text>",
    ]
    for frac in (0.0, 0.5, 1.0):
        x = left + frac * (right - left)
        value = x_range[0] + frac * (x_range[1] - x_range[0])
        parts.append(f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="middle" font-size="10">{value:.3g}</text>')
    parts.append(f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" font-size="10">{y_max:.3g}</text>')
    return parts


def _legend(x: float, y: float, entries: Sequence[tuple[str, str, str]]) -> list[str]:
    """entries: (label, colour, dash pattern or '')."""
    parts = []
    for i, (label, colour, dash) in enumerate(entries):
        yy = y + 14 * i
        style = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<line x1="{x}" y1="{yy}" x2="{x + 18}" y2="{yy}" stroke="{colour}" stroke-width="2"{style}/>')
        parts.append(f'<text x="{x + 22}" y="{yy + 4}" font-size="10">{escape(label)}</text>')
    return parts


def _curves(history: Sequence[float], val_history: Sequence[float]) -> list[str]:
    curves = [
        (name, np.asarray(v, float)) for name, v in (("training loss", history), ("validation loss", val_history))
    ]
    curves = [(name, v) for name, v in curves if v.size]
    epochs = max((v.size for _, v in curves), default=1)
    y_max = max((float(v.max()) for _, v in curves), default=1.0)
    parts = _axes(0.0, "Training curve", "epoch", (1.0, float(epochs)), y_max)
    left, right, top, bottom = MARGIN, PANEL_W - 10, 30.0, PANEL_H - 36
    for (_, v), colour in zip(curves, COLOURS, strict=False):
        xs = _scale(np.arange(1, v.size + 1, dtype=float), 1.0, float(max(epochs, 2)), left, right)
        ys = _scale(v, 0.0, y_max, bottom, top)
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
    parts += _legend(right - 120, top + 10, [(name, c, "") for (name, _), c in zip(curves, COLOURS, strict=False)])
    return parts


def _distributions(train_scores: np.ndarray, held_out_scores: np.ndarray, threshold: float) -> list[str]:
    both = np.concatenate([train_scores, held_out_scores]).astype(float)
    hi = max(float(np.percentile(both, 99.5)), threshold * 1.5, 1e-12)
    edges = np.linspace(0.0, hi, BINS + 1)
    densities = [
        np.histogram(np.clip(s, 0.0, hi), bins=edges, density=True)[0] for s in (train_scores, held_out_scores)
    ]
    y_max = max(float(d.max()) for d in densities) or 1.0
    x0 = PANEL_W
    parts = _axes(x0, "Score distributions", "adversarial score (KL)", (0.0, hi), y_max)
    left, right, top, bottom = x0 + MARGIN, x0 + PANEL_W - 10, 30.0, PANEL_H - 36
    xs = _scale(edges, 0.0, hi, left, right)
    for density, colour in zip(densities, COLOURS, strict=True):
        for i, d in enumerate(density):
            y = float(_scale(np.array([d]), 0.0, y_max, bottom, top)[0])
            parts.append(
                f'<rect x="{xs[i]:.1f}" y="{y:.1f}" width="{xs[i + 1] - xs[i]:.2f}" height="{bottom - y:.1f}" '
                f'fill="{colour}" fill-opacity="0.55"/>'
            )
    tx = float(_scale(np.array([threshold]), 0.0, hi, left, right)[0])
    parts.append(f'<line x1="{tx:.1f}" y1="{top}" x2="{tx:.1f}" y2="{bottom}" stroke="#000" stroke-dasharray="5,3"/>')
    entries = [("training instances", COLOURS[0], ""), ("held-out clean", COLOURS[1], ""), ("threshold", "#000", "5,3")]
    parts += _legend(right - 120, top + 10, entries)
    return parts


def write_card_figure(
    path: Path,
    history: Sequence[float],
    val_history: Sequence[float],
    train_scores: np.ndarray,
    held_out_scores: np.ndarray,
    threshold: float,
) -> None:
    body = _curves(history, val_history) + _distributions(train_scores, held_out_scores, threshold)
    path.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * PANEL_W:.0f}" height="{PANEL_H:.0f}" '
        f'font-family="sans-serif">\n<rect width="100%" height="100%" fill="#fff"/>\n' + "\n".join(body) + "\n</svg>\n"
    )
