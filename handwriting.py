"""A handwriting check that is not MNIST: digits drawn as pen strokes on a browser-like canvas.

Every digit has a few stroke styles (how people write it: a 1 with or without a flag and a
base, an open or closed 4, a 7 with or without a bar, ...), each a list of pen strokes in a
unit box (x right, y down, the digit about 1 tall). ``render`` draws a style the way a page's
canvas would: round-capped anti-aliased strokes of a given width on a 280x280 RGBA canvas,
transparent or white, in black or coloured ink, slanted, rotated, stretched, moved and with a
slightly shaky hand. ``samples`` draws a fixed, seeded set; ``dataset`` sends each canvas as a
PNG data URL through the server's own image pipeline (``imaging.prepare``), so a model is
scored on exactly what ``/predict`` would feed it.

    python handwriting.py --out /tmp/handwriting    # the canvases as PNGs, and preview.png
"""
import argparse
import base64
from pathlib import Path

import cv2
import numpy as np

import imaging

CANVAS = 280
PER_DIGIT = 40
SEED = 2024

# Ranges of the random drawing parameters (canvas pixels or fractions of the canvas).
THICKNESS = (8, 34)        # pen width in pixels on the 280-pixel canvas
HEIGHT = (0.4, 0.85)       # digit height / canvas side
ASPECT = (0.75, 1.3)       # width stretch
SLANT = (-0.2, 0.35)       # shear; positive leans right like italics
ROTATION = (-10, 10)       # degrees
JITTER = 0.025             # shaky hand: std of the control-point noise, in digit heights
INKS = (  # (ink BGRA, background BGRA): a transparent canvas, or a white one
    ((0, 0, 0, 255), (0, 0, 0, 0)),
    ((0, 0, 0, 255), (255, 255, 255, 255)),
    ((180, 60, 20, 255), (0, 0, 0, 0)),          # blue ink
    ((60, 60, 60, 255), (255, 255, 255, 255)),   # pencil grey on white
)


# ---------------------------------------------------------------------------------------
# Stroke building blocks: each returns points (k, 2) in the unit box.

def line(*points):
    """A polyline through the points, corners kept sharp."""
    return np.array(points, dtype=float)


def curve(*points, samples=10):
    """A smooth curve through the points (centripetal-free Catmull-Rom spline)."""
    p = np.array(points, dtype=float)
    p = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])  # extend the ends
    t = np.linspace(0, 1, samples, endpoint=False)[:, None]
    out = []
    for p0, p1, p2, p3 in zip(p, p[1:], p[2:], p[3:]):
        out.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (3 * p1 - p0 - 3 * p2 + p3) * t ** 3))
    out.append(p[-2][None])
    return np.vstack(out)


def arc(cx, cy, rx, ry, start, end, samples=40):
    """An elliptical arc; angles in degrees, 0 = right, 90 = down (y points down)."""
    a = np.radians(np.linspace(start, end, samples))
    return np.column_stack([cx + rx * np.cos(a), cy + ry * np.sin(a)])


def path(*pieces):
    """One pen stroke made of consecutive pieces."""
    return np.vstack(pieces)


# ---------------------------------------------------------------------------------------
# How people write each digit: styles, each a list of strokes (pen down ... pen up).

STYLES = {
    0: [
        [arc(0.5, 0.5, 0.3, 0.5, -90, 270)],
        [arc(0.5, 0.5, 0.36, 0.48, -100, 285)],                      # overshooting the start
        [arc(0.5, 0.5, 0.2, 0.5, -80, 275)],                         # narrow
    ],
    1: [
        [line((0.5, 0), (0.5, 1))],
        [line((0.3, 0.22), (0.55, 0), (0.55, 1))],                   # with a flag
        [line((0.3, 0.22), (0.55, 0), (0.55, 1)), line((0.3, 1), (0.8, 1))],  # flag and base
        [line((0.25, 0.35), (0.6, 0), (0.6, 1))],                   # long upstroke
    ],
    2: [
        [path(arc(0.5, 0.28, 0.3, 0.28, 190, 360),
              curve((0.8, 0.28), (0.65, 0.55), (0.4, 0.78), (0.18, 1)),
              line((0.18, 1), (0.85, 1)))],
        [path(arc(0.5, 0.3, 0.3, 0.3, 200, 365), curve((0.8, 0.33), (0.5, 0.7), (0.2, 0.95),
                                                       (0.32, 0.88), (0.5, 0.95), (0.85, 0.98)))],
        [path(curve((0.18, 0.2), (0.45, 0.0), (0.78, 0.12), (0.72, 0.38), (0.2, 1)),
              line((0.2, 1), (0.9, 0.97)))],                         # flatter, sharp corner
    ],
    3: [
        [path(arc(0.5, 0.26, 0.28, 0.26, -160, 90), arc(0.5, 0.74, 0.32, 0.26, -90, 160))],
        [path(line((0.18, 0.02), (0.8, 0.02), (0.45, 0.4)),
              curve((0.45, 0.4), (0.75, 0.5), (0.8, 0.78), (0.55, 1), (0.2, 0.9)))],  # flat top
        [path(curve((0.2, 0.12), (0.5, 0), (0.75, 0.15), (0.65, 0.4), (0.4, 0.48)),
              curve((0.4, 0.48), (0.75, 0.58), (0.78, 0.88), (0.45, 1), (0.15, 0.88)))],
    ],
    4: [
        [line((0.62, 0), (0.12, 0.66), (0.9, 0.66)), line((0.65, 0.3), (0.65, 1))],  # closed
        [line((0.22, 0), (0.18, 0.58), (0.85, 0.58)), line((0.7, 0.02), (0.7, 1))],  # open
        [line((0.3, 0), (0.18, 0.6), (0.88, 0.56)), line((0.68, 0.25), (0.62, 1))],
        [line((0.68, 1), (0.68, 0), (0.1, 0.66), (0.92, 0.66))],      # one stroke, no lift
    ],
    5: [
        [line((0.8, 0), (0.3, 0)), path(line((0.3, 0), (0.25, 0.45)),
                                        arc(0.48, 0.7, 0.32, 0.3, -125, 160))],
        [path(line((0.3, 0.02), (0.25, 0.45)), arc(0.48, 0.7, 0.32, 0.3, -125, 150)),
         line((0.3, 0.02), (0.8, 0))],                               # bar drawn last
        [path(line((0.82, 0), (0.28, 0), (0.22, 0.42)),
              curve((0.22, 0.42), (0.55, 0.38), (0.8, 0.62), (0.6, 0.95), (0.18, 0.9)))],
    ],
    6: [
        [curve((0.72, 0.02), (0.42, 0.22), (0.22, 0.6), (0.32, 0.94), (0.58, 0.98),
               (0.75, 0.78), (0.58, 0.57), (0.35, 0.6), (0.25, 0.74))],
        [path(line((0.65, 0), (0.28, 0.6)), arc(0.5, 0.76, 0.25, 0.24, 180, 540))],
        [curve((0.8, 0.1), (0.55, 0), (0.3, 0.2), (0.22, 0.6), (0.38, 0.97), (0.7, 0.92),
               (0.72, 0.62), (0.45, 0.55), (0.24, 0.66))],
    ],
    7: [
        [line((0.15, 0), (0.85, 0), (0.38, 1))],
        [line((0.15, 0), (0.85, 0), (0.38, 1)), line((0.35, 0.52), (0.78, 0.48))],  # barred
        [path(line((0.12, 0.1), (0.18, 0)), curve((0.18, 0), (0.85, 0.02), (0.6, 0.45),
                                                  (0.48, 1)))],
    ],
    8: [
        [curve((0.78, 0.1), (0.5, 0), (0.25, 0.15), (0.35, 0.4), (0.7, 0.6), (0.75, 0.9),
               (0.5, 1), (0.25, 0.9), (0.3, 0.6), (0.65, 0.4), (0.75, 0.15), (0.5, 0))],
        [arc(0.5, 0.24, 0.24, 0.24, 90, 450), arc(0.5, 0.73, 0.3, 0.27, -90, 270)],
        [curve((0.5, 0.48), (0.25, 0.3), (0.35, 0.02), (0.65, 0.02), (0.72, 0.28), (0.5, 0.48),
               (0.22, 0.7), (0.35, 0.98), (0.68, 0.98), (0.78, 0.72), (0.5, 0.48))],
    ],
    9: [
        [path(arc(0.45, 0.28, 0.28, 0.27, 0, 360), line((0.73, 0.28), (0.7, 1)))],
        [path(arc(0.45, 0.28, 0.28, 0.27, -10, 360),
              curve((0.73, 0.28), (0.72, 0.65), (0.6, 0.92), (0.35, 1)))],       # curved tail
        [path(arc(0.5, 0.25, 0.3, 0.24, 20, 370), line((0.78, 0.3), (0.5, 1)))],   # slanted stem
    ],
}


# ---------------------------------------------------------------------------------------
# Drawing.

def render(strokes, *, thickness=18, height=0.7, aspect=1.0, slant=0.0, rotation=0.0,
           centre=(0.5, 0.5), ink=(0, 0, 0, 255), background=(0, 0, 0, 0), size=CANVAS):
    """Draw strokes (unit-box points) on a ``size`` x ``size`` BGRA canvas (uint8).

    The digit is ``height`` * size tall, stretched in x by ``aspect``, slanted by ``slant``,
    rotated by ``rotation`` degrees and centred at ``centre`` (fractions of the canvas).
    ``ink`` and ``background`` are BGRA colours; the ink is composited over the background.
    """
    angle = np.radians(rotation)
    R = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    # unit box -> canvas pixels; y points down, so x -= slant * y leans the top to the right
    A = height * size * R @ np.array([[aspect, -slant], [0, 1]])
    mask = np.zeros((size, size), np.uint8)
    shift = 4  # sub-pixel precision: coordinates in 1/16 pixel
    for stroke in strokes:
        xy = (stroke - 0.5) @ A.T + np.asarray(centre) * size
        pts = np.rint(xy * (1 << shift)).astype(np.int32)
        cv2.polylines(mask, [pts], False, 255, int(thickness), cv2.LINE_AA, shift)
    # "source over" compositing of the ink, with coverage = mask, on the background
    cover = mask[..., None].astype(np.float32) / 255 * (ink[3] / 255)
    ink_rgb, bg_rgb = np.array(ink[:3], np.float32), np.array(background[:3], np.float32)
    bg_alpha = background[3] / 255
    alpha = cover + bg_alpha * (1 - cover)
    rgb = (ink_rgb * cover + bg_rgb * bg_alpha * (1 - cover)) / np.maximum(alpha, 1e-6)
    return np.dstack([np.rint(rgb), np.rint(alpha * 255)]).astype(np.uint8)


def _shaky(strokes, rng, amount):
    """The same strokes drawn by a less steady hand: smooth random offsets along each one."""
    out = []
    for s in strokes:
        knots = rng.normal(0, amount, (4, 2))  # a few random offsets, interpolated along s
        t = np.linspace(0, 3, len(s))
        out.append(s + np.column_stack([np.interp(t, np.arange(4), knots[:, i])
                                        for i in range(2)]))
    return out


def samples(per_digit=PER_DIGIT, seed=SEED):
    """The check set: a list of (label, BGRA canvas, drawing parameters), seeded."""
    rng = np.random.default_rng(seed)
    out = []
    for digit, styles in STYLES.items():
        for i in range(per_digit):
            style = i % len(styles)
            ink, background = INKS[rng.integers(len(INKS))]
            height = rng.uniform(*HEIGHT)
            params = dict(thickness=int(rng.integers(THICKNESS[0], THICKNESS[1] + 1)),
                          height=height, aspect=rng.uniform(*ASPECT),
                          slant=rng.uniform(*SLANT), rotation=rng.uniform(*ROTATION),
                          centre=tuple(rng.uniform(0.5 - (1 - height) / 3,
                                                   0.5 + (1 - height) / 3, 2)),
                          ink=ink, background=background)
            strokes = _shaky(styles[style], rng, JITTER)
            out.append((digit, render(strokes, **params), dict(params, style=style, index=i)))
    return out


def data_url(canvas):
    """A BGRA canvas as the PNG data URL a browser's ``canvas.toDataURL()`` returns."""
    ok, png = cv2.imencode('.png', canvas)
    if not ok:
        raise ValueError(f'could not encode a canvas of shape {canvas.shape} as PNG')
    return 'data:image/png;base64,' + base64.b64encode(png.tobytes()).decode('ascii')


def prepare(drawn):
    """What ``/predict`` feeds a net for each drawing: X (n, 784) float32 in [0, 1]."""
    return np.stack([imaging.prepare(data_url(canvas)).reshape(-1)
                     for _, canvas, _ in drawn]).astype(np.float32)


def dataset(per_digit=PER_DIGIT, seed=SEED):
    """The check set as the server sees it: X (n, 784) float32 in [0, 1], y (n,) int64."""
    drawn = samples(per_digit, seed)
    return prepare(drawn), np.array([label for label, _, _ in drawn], dtype=np.int64)


def preview(drawn, X, columns=20, size=56):
    """One grayscale image: each canvas (on white) above what the pipeline made of it."""
    tiles = []
    for (_, canvas, _), x in zip(drawn, X):
        alpha = canvas[..., 3:].astype(np.float32) / 255
        gray = cv2.cvtColor(canvas[..., :3], cv2.COLOR_BGR2GRAY)[..., None] * alpha
        flat = (gray + 255 * (1 - alpha)).astype(np.uint8)
        digit = (x.reshape(28, 28) * 255).astype(np.uint8)
        tiles.append(np.vstack([cv2.resize(flat, (size, size), interpolation=cv2.INTER_AREA),
                                cv2.resize(digit, (size, size),
                                           interpolation=cv2.INTER_NEAREST)]))
    columns = min(columns, len(tiles))
    gap = 2
    rows = -(-len(tiles) // columns)
    h, w = tiles[0].shape
    sheet = np.full((rows * (h + gap) + gap, columns * (w + gap) + gap), 160, np.uint8)
    for k, tile in enumerate(tiles):
        top, left = gap + (k // columns) * (h + gap), gap + (k % columns) * (w + gap)
        sheet[top:top + h, left:left + w] = tile
    return sheet


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', type=Path, required=True, help='folder for the PNG files')
    parser.add_argument('--per-digit', type=int, default=PER_DIGIT)
    parser.add_argument('--seed', type=int, default=SEED)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    drawn = samples(args.per_digit, args.seed)
    for k, (label, canvas, _) in enumerate(drawn):
        cv2.imwrite(str(args.out / f'{k:04d}-{label}.png'), canvas)
    cv2.imwrite(str(args.out / 'preview.png'), preview(drawn, prepare(drawn)))
    print(f'wrote {len(drawn)} canvases and preview.png (each canvas above its 28x28 input) '
          f'to {args.out}')


if __name__ == '__main__':
    main()
