"""imaging.py: decoding (formats, base64 forms, limits) and MNIST-style preprocessing,
on real images encoded by OpenCV and real MNIST digits."""
import base64
import struct
import zlib

import cv2
import numpy as np
import pytest

import imaging


def encode(image, ext='.png', params=()):
    ok, data = cv2.imencode(ext, image, list(params))
    assert ok
    return data.tobytes()


def rgba_of(bgr_or_gray):
    """What decode_image should return for an image cv2 would encode losslessly."""
    if bgr_or_gray.ndim == 2:
        return cv2.cvtColor(bgr_or_gray, cv2.COLOR_GRAY2RGBA)
    code = cv2.COLOR_BGRA2RGBA if bgr_or_gray.shape[2] == 4 else cv2.COLOR_BGR2RGBA
    return cv2.cvtColor(bgr_or_gray, code)


@pytest.fixture(scope='module')
def picture():
    """A 37x53 BGR picture with distinct colours (odd sizes catch width/height mix-ups)."""
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)


def canvas_digit(size=(280, 280), ink=(0, 0, 0, 255), paper=(255, 255, 255, 255),
                 text='7', thickness=18, origin=(70, 230), scale=7):
    """A digit drawn with anti-aliasing on an RGBA canvas (RGBA channel order)."""
    image = np.empty(size + (4,), np.uint8)
    image[:] = paper
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thickness,
                cv2.LINE_AA)
    return image


def centre_of_mass(x):
    ys, xs = np.indices(x.shape)
    return (ys * x).sum() / x.sum(), (xs * x).sum() / x.sum()


def bbox(x, threshold=0.1):
    rows = np.flatnonzero((x > threshold).any(axis=1))
    cols = np.flatnonzero((x > threshold).any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


# ---------------------------------------------------------------------------------------
# Decoding.

@pytest.mark.parametrize('ext', ['.png', '.bmp', '.webp'])
def test_lossless_formats_decode_to_the_same_rgba(picture, ext):
    params = [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == '.webp' else []  # 101 = lossless
    rgba = imaging.decode_image(encode(picture, ext, params))
    assert rgba.dtype == np.uint8 and rgba.shape == (37, 53, 4)
    np.testing.assert_array_equal(rgba, rgba_of(picture))


def test_jpeg_decodes_close_to_the_original():
    smooth = np.dstack([np.tile(np.arange(64, dtype=np.uint8) * 4, (40, 1))] * 3)
    rgba = imaging.decode_image(encode(smooth, '.jpg', [cv2.IMWRITE_JPEG_QUALITY, 95]))
    assert rgba.shape == (40, 64, 4) and (rgba[..., 3] == 255).all()
    assert np.abs(rgba[..., :3].astype(int) - smooth).mean() < 2


def test_alpha_grey_and_16_bit_pngs_keep_their_meaning():
    bgra = np.zeros((5, 6, 4), np.uint8)
    bgra[1, 2] = (10, 20, 30, 128)  # B, G, R, A
    np.testing.assert_array_equal(imaging.decode_image(encode(bgra))[1, 2], (30, 20, 10, 128))
    grey = np.arange(30, dtype=np.uint8).reshape(5, 6) * 8
    np.testing.assert_array_equal(imaging.decode_image(encode(grey)), rgba_of(grey))
    deep = (grey.astype(np.uint16) << 8) | 0xFF
    np.testing.assert_array_equal(imaging.decode_image(encode(deep)), rgba_of(grey))


def test_every_base64_form_gives_the_same_pixels(picture):
    png = encode(picture)
    plain = base64.b64encode(png).decode()
    assert '+' in plain or '/' in plain  # so that the URL-safe form differs
    forms = [plain, 'data:image/png;base64,' + plain, 'DATA:image/png;charset=x;base64,' + plain,
             base64.urlsafe_b64encode(png).decode(), plain.rstrip('='),
             '\n'.join(plain[i:i + 76] for i in range(0, len(plain), 76)) + '\n']
    for text in forms:
        np.testing.assert_array_equal(imaging.decode_image(text), rgba_of(picture))


@pytest.mark.parametrize('data, message', [
    ('', 'the image is empty'),
    ('data:image/png;base64,', 'the image is empty'),
    ('data:image/png,iVBORw0KGgo', 'a data URL must look like'),
    ('iVBOR$w0K', "unexpected character '$'"),
    ('iVBORw0KG', 'cannot encode whole bytes'),
    (base64.b64encode(b'hello world, not an image').decode(), 'not a PNG, JPEG, WebP or BMP'),
    (b'GIF89a\x01\x00\x01\x00', 'not a PNG, JPEG, WebP or BMP'),
    (12345, 'must be base64 text or bytes'),
])
def test_bad_data_raises_a_clear_image_error(data, message):
    with pytest.raises(imaging.ImageError, match=message.replace('$', r'\$')):
        imaging.decode_image(data)


def test_truncated_image_is_an_image_error(picture):
    png = encode(picture)
    with pytest.raises(imaging.ImageError, match=r'broken PNG: chunk IDAT .* truncated'):
        imaging.decode_image(png[:len(png) // 2])


@pytest.mark.parametrize('ext, params', [
    ('.png', []), ('.bmp', []), ('.jpg', []), ('.jpg', [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    ('.webp', [cv2.IMWRITE_WEBP_QUALITY, 80]), ('.webp', [cv2.IMWRITE_WEBP_QUALITY, 101]),
])
@pytest.mark.parametrize('channels', [3, 4])
def test_header_sizes_match_the_encoded_size(ext, params, channels):
    image = np.full((123, 301, channels), 200, np.uint8)
    image[..., -1] = 128  # alpha (dropped by JPEG and BMP), makes WebP write a VP8X header
    kind, width, height = imaging.image_size(encode(image, ext, params))
    assert (width, height) == (301, 123)
    assert kind == {'.png': 'PNG', '.bmp': 'BMP', '.jpg': 'JPEG', '.webp': 'WebP'}[ext]


def test_huge_image_is_refused_from_its_header_before_decoding(picture):
    # A real 6000x3000 PNG (18 MP) is refused...
    big = encode(np.zeros((3000, 6000), np.uint8))
    with pytest.raises(imaging.ImageTooLarge, match='6000x3000 = 18000000 pixels'):
        imaging.decode_image(big)
    # ... and so is a small PNG whose header claims 60000x60000 with a valid CRC: decoding
    # it would try to allocate 14 GB.
    png = bytearray(encode(picture))
    ihdr = b'IHDR' + struct.pack('>II', 60000, 60000) + bytes(png[24:29])
    png[12:33] = ihdr + struct.pack('>I', zlib.crc32(ihdr))
    with pytest.raises(imaging.ImageTooLarge, match='at most 16777216'):
        imaging.decode_image(bytes(png))
    exactly = encode(np.zeros((4096, 4096), np.uint8))
    assert imaging.decode_image(exactly).shape == (4096, 4096, 4)


# ---------------------------------------------------------------------------------------
# Preprocessing.

def test_mnist_digits_come_out_unchanged(mnist):
    (_, _), (X_test, _) = mnist
    images = X_test[:2000].reshape(-1, 28, 28)
    unchanged = 0
    for image in images:
        out = imaging.to_mnist(rgba_of(image))
        assert out.dtype == np.float32 and out.shape == (28, 28)
        assert 0 <= out.min() and out.max() == 1
        unchanged += np.abs(out - image / 255).max() < 0.01
    assert unchanged >= 0.99 * len(images)


def test_ink_and_paper_colours_do_not_matter():
    reference = imaging.to_mnist(canvas_digit())  # black on white
    assert reference.max() == 1 and reference[0].max() == 0  # white ink on a black field
    variants = {
        'white on black': canvas_digit(ink=(255, 255, 255, 255), paper=(0, 0, 0, 255)),
        'black on transparent': canvas_digit(paper=(0, 0, 0, 0)),
        'white on transparent': canvas_digit(ink=(255, 255, 255, 255), paper=(0, 0, 0, 0)),
        'blue on transparent white': canvas_digit(ink=(0, 0, 255, 255),
                                                  paper=(255, 255, 255, 0)),
        'dark red on yellow': canvas_digit(ink=(120, 0, 0, 255), paper=(255, 230, 0, 255)),
    }
    for name, image in variants.items():
        out = imaging.to_mnist(image)
        assert np.abs(out - reference).mean() < 0.05, name
        assert np.corrcoef(out.ravel(), reference.ravel())[0, 1] > 0.99, name


def test_transparent_canvas_ink_is_not_lost():
    # What a browser canvas exports: black strokes, everything else (0, 0, 0, 0). Without
    # alpha this is an all-black, blank image.
    image = canvas_digit(paper=(0, 0, 0, 0))
    assert (image[..., :3] == 0).all()
    out = imaging.to_mnist(image)
    assert out.sum() > 20


def test_digit_is_scaled_to_20_px_and_centred_by_mass():
    # A small, off-centre, tall digit on a big canvas.
    image = canvas_digit(size=(600, 800), text='1', origin=(40, 120), scale=3, thickness=8)
    drawn_height, drawn_width = bbox(255 - image[..., 0])
    assert drawn_height > 60 and drawn_width < 0.8 * drawn_height
    out = imaging.to_mnist(image)
    height, width = bbox(out)
    assert height == 20 and abs(width - 20 * drawn_width / drawn_height) <= 1
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_aspect_ratio_is_kept():
    image = np.zeros((300, 300, 4), np.uint8)
    image[..., 3] = 255
    image[50:250, 100:200, :3] = 255  # a white 200x100 block
    out = imaging.to_mnist(image)
    assert bbox(out) == (20, 10)
    assert (out[bbox_slice(out)] > 0.99).all()


@pytest.mark.parametrize('shape', [(200, 1), (1, 200), (120, 300)])
def test_one_pixel_wide_strokes_and_whole_images_are_digits(shape):
    # A hair-thin stroke (an N x 1 ink box) and ink filling the whole image still give a
    # digit scaled to 20 px and centred by mass.
    image = np.zeros((*shape, 4), np.uint8)
    image[..., 3] = 255
    image[..., :3] = 217  # grey ink everywhere, no paper at all
    image[0, 0, :3] = 0
    out = imaging.to_mnist(image)
    assert max(bbox(out)) == 20
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def bbox_slice(x):
    rows = np.flatnonzero(x.any(axis=1))
    cols = np.flatnonzero(x.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def test_tiny_drawing_is_enlarged_smoothly():
    image = np.zeros((50, 50, 4), np.uint8)
    image[..., 3] = 255
    image[20:25, 22:24, :3] = 255  # a 5x2 dash
    out = imaging.to_mnist(image)
    assert bbox(out) == (20, 8)


def test_jpeg_canvas_gives_the_png_result_up_to_a_pixel():
    canvas = canvas_digit()
    reference = imaging.to_mnist(canvas)
    bgr = cv2.cvtColor(canvas, cv2.COLOR_RGBA2BGR)
    out = imaging.prepare(encode(bgr, '.jpg', [cv2.IMWRITE_JPEG_QUALITY, 75]))
    assert bbox(out) == bbox(reference)
    assert np.allclose(centre_of_mass(out), centre_of_mass(reference), atol=1)


@pytest.mark.parametrize('name, image', [
    ('transparent', np.zeros((280, 280, 4), np.uint8)),
    ('white', np.full((280, 280, 4), 255, np.uint8)),
    ('grey', np.full((10, 10, 4), 128, np.uint8)),
    ('faint speck', canvas_digit(ink=(240, 240, 240, 255))),
])
def test_blank_images_have_no_digit(name, image):
    with pytest.raises(imaging.NoDigitError, match='no digit found'):
        imaging.to_mnist(image)


def test_to_mnist_rejects_what_is_not_rgba():
    with pytest.raises(imaging.ImageError, match=r'expected RGBA uint8 pixels \(H, W, 4\)'):
        imaging.to_mnist(np.zeros((28, 28), np.float32))


def test_prepare_is_decode_then_to_mnist():
    image = canvas_digit(paper=(0, 0, 0, 0))
    data = 'data:image/png;base64,' + base64.b64encode(encode(rgba_of_bgra(image))).decode()
    np.testing.assert_array_equal(imaging.prepare(data), imaging.to_mnist(image))


def rgba_of_bgra(rgba):
    return cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)
