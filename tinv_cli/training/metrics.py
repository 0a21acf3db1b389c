"""A run's metrics: ``metrics.jsonl`` (one JSON object per logged step) and the loss curve drawn from it.

The curve is drawn with PIL, which tinv needs anyway for images, so no plotting library is required. Records
are appended; the curve, and the records when a resumed run drops some, are rewritten whole through
``tinv_cli.atomic``, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinv_cli.atomic import write_text, write_with

if TYPE_CHECKING:
    from PIL import Image

METRICS_FILE = "metrics.jsonl"
LOSS_PLOT = "loss.png"

_SIZE = (800, 450)
_MARGIN = (70, 30, 30, 50)  # left, top, right, bottom
_SMOOTH = 0.8  # exponential smoothing of the drawn curve; the raw points are drawn faintly underneath


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records in ``metrics.jsonl``; a torn last line (a crash mid-write) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def append_metrics(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Add records (``{"step", "loss", "lr", "it_s"}``) to the end of ``metrics.jsonl``."""
    if not records:
        return
    with open(path, "a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(dict(record)) + "\n")


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop records past ``last_step``: steps a killed run logged after its last checkpoint are redone."""
    records = [r for r in read_metrics(path) if r["step"] <= last_step]
    write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def _smoothed(values: Sequence[float]) -> list[float]:
    out: list[float] = []
    for value in values:
        out.append(value if not out else _SMOOTH * out[-1] + (1 - _SMOOTH) * value)
    return out


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw), default=raw)
    start = math.ceil(low / step) * step
    ticks = []
    value = start
    while value <= high + step * 1e-9:
        ticks.append(value)
        value += step
    return ticks


def _label(value: float) -> str:
    return f"{value:.3g}"


def draw_loss_curve(records: Sequence[Mapping[str, Any]], out: Path, *, title: str = "training loss") -> Path:
    """Draw loss against step as a PNG at ``out`` (an empty chart with a note when there is no loss yet)."""
    from PIL import Image, ImageDraw

    points = [
        (int(r["step"]), float(r["loss"]))
        for r in records
        if isinstance(r.get("loss"), (int, float)) and math.isfinite(r["loss"])
    ]
    image = Image.new("RGB", _SIZE, "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = _MARGIN
    x0, y0, x1, y1 = left, top, _SIZE[0] - right, _SIZE[1] - bottom
    draw.rectangle((x0, y0, x1, y1), outline=(160, 160, 160))
    draw.text((x0, 8), title, fill=(0, 0, 0))
    if not points:
        draw.text((x0 + 10, y0 + 10), "no loss logged yet", fill=(120, 120, 120))
    else:
        steps = [p[0] for p in points]
        losses = [p[1] for p in points]
        s_low, s_high = min(steps), max(steps)
        l_low, l_high = min(losses), max(losses)
        if s_high == s_low:
            s_low, s_high = s_low - 1, s_high + 1
        if l_high == l_low:
            l_low, l_high = l_low - 0.5 * abs(l_low or 1), l_high + 0.5 * abs(l_high or 1)

        def xy(step: float, loss: float) -> tuple[float, float]:
            x = x0 + (step - s_low) / (s_high - s_low) * (x1 - x0)
            y = y1 - (loss - l_low) / (l_high - l_low) * (y1 - y0)
            return x, y

        for tick in _ticks(l_low, l_high):
            _, y = xy(s_low, tick)
            draw.line((x0, y, x1, y), fill=(235, 235, 235))
            draw.text((8, y - 6), _label(tick), fill=(80, 80, 80))
        for tick in _ticks(s_low, s_high):
            x, _ = xy(tick, l_low)
            draw.text((x - 10, y1 + 8), str(int(tick)), fill=(80, 80, 80))
        draw.text(((x0 + x1) / 2 - 10, _SIZE[1] - 20), "step", fill=(0, 0, 0))
        raw = [xy(s, v) for s, v in points]
        smooth = [xy(s, v) for s, v in zip(steps, _smoothed(losses), strict=True)]
        if len(raw) > 1:
            draw.line(raw, fill=(170, 200, 240), width=1)
            draw.line(smooth, fill=(20, 90, 200), width=2)
        for x, y in raw:
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(20, 90, 200))
    return save_png(image, out)


def image_grid(images: Sequence[Image.Image], columns: int | None = None) -> Image.Image:
    """Images of one size side by side, ``columns`` per row (default: as square a grid as fits)."""
    from PIL import Image

    if not images:
        raise ValueError("image_grid needs at least one image")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    width, height = images[0].size
    grid = Image.new("RGB", (columns * width, rows * height), "white")
    for index, image in enumerate(images):
        grid.paste(image.convert("RGB"), ((index % columns) * width, (index // columns) * height))
    return grid


def save_png(image: Image.Image, out: Path) -> Path:
    """Save ``image`` as a PNG at ``out`` via a temporary file, so a reader never sees half an image."""
    return write_with(out, lambda tmp: image.save(tmp, format="PNG"))
