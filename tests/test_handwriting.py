"""handwriting.py: canvas drawings of pen strokes, and the check set made of them."""
import numpy as np
import pytest

import handwriting as hw
import imaging

ONE = hw.STYLES[1][0]  # a single vertical stroke from (0.5, 0) to (0.5, 1)


def test_curve_passes_through_its_points():
    points = [(0.1, 0.2), (0.5, 0.9), (0.8, 0.3), (0.4, 0.1)]
    c = hw.curve(*points)
    for p in points:
        assert np.min(np.linalg.norm(c - p, axis=1)) < 1e-12


def test_arc_lies_on_its_ellipse():
    a = hw.arc(0.5, 0.4, 0.3, 0.2, -90, 270)
    np.testing.assert_allclose(((a[:, 0] - 0.5) / 0.3) ** 2 + ((a[:, 1] - 0.4) / 0.2) ** 2, 1)
    np.testing.assert_allclose(a[0], (0.5, 0.2))  # -90 degrees is the top (y points down)


def test_a_stroke_is_drawn_where_and_as_wide_as_asked():
    canvas = hw.render(ONE, thickness=20, height=0.5, centre=(0.5, 0.5))
    assert canvas.shape == (280, 280, 4) and canvas.dtype == np.uint8
    ink = canvas[..., 3] > 127
    assert ink[140].sum() == pytest.approx(20, abs=2)           # pen width, middle row
    rows = np.flatnonzero(ink.any(axis=1))
    assert rows[0] == pytest.approx(70 - 10, abs=2)             # 140 px tall + round caps
    assert rows[-1] == pytest.approx(210 + 10, abs=2)
    assert np.all(canvas[ink][:, :3] == 0)                      # black ink
    assert canvas[0, 0, 3] == 0                                 # transparent background


def test_white_canvas_is_opaque_and_ink_is_dark():
    canvas = hw.render(ONE, ink=(0, 0, 0, 255), background=(255, 255, 255, 255))
    assert np.all(canvas[..., 3] == 255)
    assert canvas[140, 140, 0] == 0 and canvas[0, 0, 0] == 255


def test_positive_slant_leans_the_top_to_the_right():
    canvas = hw.render(ONE, slant=0.3, thickness=10)
    rows = np.flatnonzero(canvas[..., 3].any(axis=1))
    top_x = np.flatnonzero(canvas[rows[0] + 8, :, 3] > 127).mean()
    bottom_x = np.flatnonzero(canvas[rows[-1] - 8, :, 3] > 127).mean()
    assert top_x - bottom_x > 0.25 * (rows[-1] - rows[0])


def test_samples_are_seeded_and_balanced():
    a = hw.samples(per_digit=3, seed=1)
    b = hw.samples(per_digit=3, seed=1)
    c = hw.samples(per_digit=3, seed=2)
    assert [label for label, _, _ in a] == [d for d in range(10) for _ in range(3)]
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c))
    assert {p['style'] for label, _, p in a if label == 1} == {0, 1, 2}


def test_data_url_is_what_the_server_decodes():
    canvas = hw.samples(per_digit=1)[4][1]
    url = hw.data_url(canvas)
    assert url.startswith('data:image/png;base64,')
    np.testing.assert_array_equal(imaging.decode_image(url), canvas[..., [2, 1, 0, 3]])


def test_prepared_check_set_looks_like_mnist(mnist):
    X, y = hw.dataset(per_digit=4)
    assert X.shape == (40, 784) and X.dtype == np.float32 and list(y[::4]) == list(range(10))
    (Xm, _), _ = mnist
    images = X.reshape(-1, 28, 28)
    # white ink on black, mostly in the middle 20x20 like MNIST, with about as much ink
    inside = images[:, 4:24, 4:24].sum(axis=(1, 2)) / images.sum(axis=(1, 2))
    assert inside.min() > 0.9
    peak = images.max(axis=(1, 2))  # thin pens give fainter strokes once shrunk, as in MNIST
    assert peak.min() > 0.5 and np.median(peak) > 0.95 and np.median(images) == 0
    ratio = X.mean() / (Xm[:1000].mean() / 255)
    assert 0.6 < ratio < 1.6


def test_preview_shows_each_canvas_above_its_input():
    drawn = hw.samples(per_digit=1)[:3]
    X = hw.prepare(drawn)
    sheet = hw.preview(drawn, X, size=40)
    assert sheet.shape == (2 + 80 + 2, 2 + 3 * 42)
    canvas_tile, input_tile = sheet[2:42, 2:42], sheet[42:82, 2:42]
    assert canvas_tile[0, 0] == 255 and canvas_tile.min() < 100      # dark ink on white
    assert input_tile[0, 0] == 0 and input_tile.max() > 200          # white ink on black
