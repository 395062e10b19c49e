"""Line chart of one metric from a run's metrics.jsonl (e.g. validation PSNR against wall time),
drawn with Pillow alone (no matplotlib), for the README.

    python bench/plot_metrics.py runs/coinrun/tokenizer/metrics.jsonl -o docs/tokenizer_psnr.png \
        --y psnr --x wall --title "small tokenizer on CoinRun, 2 shared CPU cores"

Several files may be given (one line each, labelled by --label or the run folder's name).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]


def read_series(path: Path, x: str, y: str, split: str) -> list[tuple[float, float]]:
    points = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("split") == split and x in record and y in record:
            points.append((float(record[x]), float(record[y])))
    return points


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 5 x 10^k steps)."""
    span = max(hi - lo, 1e-9)
    raw = span / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(int(math.ceil((hi - start) / step)) + 1)]


def draw_chart(series: dict[str, list[tuple[float, float]]], x_label: str, y_label: str,
               title: str, size: tuple[int, int] = (760, 440)) -> Image.Image:
    W, H = size
    left, right, top, bottom = 64, 20, 36, 48
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    xs = [p[0] for s in series.values() for p in s]
    ys = [p[1] for s in series.values() for p in s]
    x_ticks, y_ticks = nice_ticks(0.0, max(xs)), nice_ticks(min(ys), max(ys))
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def at(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (W - left - right),
                H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom))

    for t in x_ticks:  # grid and labels
        px, _ = at(t, y0)
        draw.line([(px, top), (px, H - bottom)], fill=(230, 230, 230))
        draw.text((px - 10, H - bottom + 6), f"{t:g}", fill="black", font=font)
    for t in y_ticks:
        _, py = at(x0, t)
        draw.line([(left, py), (W - right, py)], fill=(230, 230, 230))
        draw.text((8, py - 6), f"{t:g}", fill="black", font=font)
    draw.rectangle([left, top, W - right, H - bottom], outline="black")
    draw.text((W // 2 - 40, H - 20), x_label, fill="black", font=font)
    draw.text((8, 12), y_label, fill="black", font=font)
    draw.text((left + 120, 12), title, fill="black", font=font)
    for i, (name, points) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        pts = [at(x, y) for x, y in sorted(points)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for px, py in pts:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
        lx, ly = W - right - 230, top + 8 + 14 * i
        draw.line([(lx, ly + 6), (lx + 16, ly + 6)], fill=colour, width=2)  # legend swatch
        draw.text((lx + 22, ly), name, fill=colour, font=font)
    return img


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--x", default="wall", help="wall (s, training + evaluation), time, or step")
    parser.add_argument("--y", default="psnr")
    parser.add_argument("--split", default="val")
    parser.add_argument("--minutes", action="store_true", help="show x (seconds) in minutes")
    parser.add_argument("--label", action="append", default=[])
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    series = {}
    for i, path in enumerate(args.metrics):
        points = read_series(path, args.x, args.y, args.split)
        if args.minutes:
            points = [(x / 60, y) for x, y in points]
        name = args.label[i] if i < len(args.label) else path.parent.parent.name
        series[name] = points
    x_label = f"{args.x} ({'min' if args.minutes else 's'})" if args.x != "step" else "step"
    image = draw_chart(series, x_label, f"{args.split} {args.y}", args.title)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.output)
    print(args.output)


if __name__ == "__main__":
    main()
