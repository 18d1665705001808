"""Turn any drawn or photographed digit into the 784 inputs of an MNIST network.

MNIST itself was made this way: each digit was scaled so that its longest side is 20 px
(keeping the aspect ratio, anti-aliased into grey levels) and pasted into a 28x28 field so
that its centre of mass sits at the centre, (14, 14), white ink on black. ``to_mnist`` does
the same to any image, so an MNIST image comes out unchanged:

    rgba = decode_image('data:image/png;base64,iVBOR...')   # (H, W, 4) uint8
    x = to_mnist(rgba)                                       # (28, 28) float32 in [0, 1]
    x = prepare('data:image/png;base64,iVBOR...')            # both steps

Only PNG, JPEG, WebP and BMP are accepted, and their size is read from the file header
before any pixel is decoded, so a small file that expands to a huge image is refused cheaply.
"""
import base64
import binascii
import re
import struct

import cv2
import numpy as np

MAX_PIXELS = 4096 * 4096  # width * height; a 16-megapixel photo still fits
MNIST_SIZE = 28
DIGIT_SIZE = 20  # longest side of the digit inside the 28x28 field
INK_THRESHOLD = 0.1  # ink at or below this (0..1) is background noise (JPEG artefacts, paper)
MAX_JPEG_SEGMENTS = 1000  # segments read while looking for a JPEG's size
_DATA_URL = re.compile(r'data:[^,]*?;base64,', re.IGNORECASE)
_JPEG_MARKER = re.compile(rb'\xff+([^\xff])')
_INDEX = np.arange(DIGIT_SIZE, dtype=np.float32)  # row or column numbers in the digit
_INDEX.flags.writeable = False


class ImageError(ValueError):
    """The data is not a usable image; the message says what is wrong."""


class ImageTooLarge(ImageError):
    """The image header announces more than MAX_PIXELS pixels."""


class NoDigitError(ImageError):
    """The image is blank: nothing stands out from the background."""


# ---------------------------------------------------------------------------------------
# Decoding: base64 -> bytes -> header check -> RGBA pixels.

def decode_base64(text):
    """Bytes of a base64 string (standard or URL-safe, padding optional, data: URL allowed)."""
    text = text.strip()
    if text[:5].lower() == 'data:':
        prefix = _DATA_URL.match(text)
        if prefix is None:
            raise ImageError('a data URL must look like "data:image/png;base64,<base64 data>", '
                             f'got {text[:40]!r}...')
        text = text[prefix.end():]
    try:  # what browsers send: standard, padded, one line
        data = binascii.a2b_base64(text, strict_mode=True)
        if data:
            return data
    except (binascii.Error, ValueError):  # ValueError: text that is not ASCII
        pass
    text = re.sub(r'\s+', '', text).replace('-', '+').replace('_', '/').rstrip('=')
    if not text:
        raise ImageError('the image is empty: expected base64-encoded PNG, JPEG, WebP or BMP data.')
    bad = re.search(r'[^A-Za-z0-9+/]', text)
    if bad:
        raise ImageError(f'invalid base64: unexpected character {bad.group()!r} at position '
                         f'{bad.start()}.')
    if len(text) % 4 == 1:
        raise ImageError(f'invalid base64: {len(text)} characters cannot encode whole bytes.')
    return base64.b64decode(text + '=' * (-len(text) % 4))


def image_size(data):
    """(format, width, height) read from the header of PNG, JPEG, WebP or BMP bytes."""
    if data.startswith(b'\x89PNG\r\n\x1a\n'):
        if len(data) < 24 or data[12:16] != b'IHDR':
            raise ImageError('broken PNG: no complete IHDR header with the image size.')
        return ('PNG',) + struct.unpack('>II', data[16:24])
    if data.startswith(b'\xff\xd8'):
        return ('JPEG',) + _jpeg_size(data)
    if data.startswith(b'RIFF') and data[8:12] == b'WEBP':
        return ('WebP',) + _webp_size(data)
    if data.startswith(b'BM') and len(data) >= 26:
        if struct.unpack('<I', data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
            return ('BMP',) + struct.unpack('<HH', data[18:22])
        width, height = struct.unpack('<ii', data[18:26])
        return 'BMP', abs(width), abs(height)  # a negative height means top-down rows
    raise ImageError(f'not a PNG, JPEG, WebP or BMP image (starts with {data[:8]!r}).')


def _jpeg_size(data):
    # Walk the segments up to the first start-of-frame marker, which holds the size. Real
    # files have a few segments before it; a file of nothing but fill bytes or empty
    # segments would keep a Python loop busy for seconds, so both are bounded.
    i = 2
    for _ in range(MAX_JPEG_SEGMENTS):
        marker = _JPEG_MARKER.match(data, i)  # 0xFF, any 0xFF fill bytes, the marker code
        if marker is None:
            break
        code, i = marker.group(1)[0], marker.end()
        if code in (0x01, *range(0xD0, 0xD9)):  # markers without a length
            continue
        if i + 7 > len(data):
            break
        if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack('>HH', data[i + 3:i + 7])
            return width, height
        i += struct.unpack('>H', data[i:i + 2])[0]
    raise ImageError('broken JPEG: no frame header with the image size.')


def _webp_size(data):
    chunk = data[12:16]
    if chunk == b'VP8 ' and len(data) >= 30 and data[23:26] == b'\x9d\x01\x2a':
        width, height = struct.unpack('<HH', data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b'VP8L' and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], 'little')
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b'VP8X' and len(data) >= 30:
        return (int.from_bytes(data[24:27], 'little') + 1,
                int.from_bytes(data[27:30], 'little') + 1)
    raise ImageError(f'broken WebP: unknown or truncated {chunk!r} header.')


def decode_image(data):
    """RGBA uint8 pixels (H, W, 4) of base64 text (str) or encoded image bytes.

    Raises ImageError (ImageTooLarge over MAX_PIXELS) with a message saying what is wrong.
    """
    pixels = _decode(data)
    if pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGBA)
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGBA if pixels.shape[2] == 3 else
                        cv2.COLOR_BGRA2RGBA)


def _decode(data):
    """Pixels as OpenCV decodes them: uint8 grey (H, W), BGR (H, W, 3) or BGRA (H, W, 4)."""
    if isinstance(data, str):
        data = decode_base64(data)
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError(f'image must be base64 text or bytes, got {type(data).__name__}.')
    data = bytes(data)
    kind, width, height = image_size(data)
    if width < 1 or height < 1:
        raise ImageError(f'the {kind} header announces an empty image ({width}x{height}).')
    if width * height > MAX_PIXELS:
        raise ImageTooLarge(f'the {kind} image is {width}x{height} = {width * height} pixels; '
                            f'at most {MAX_PIXELS} are accepted (e.g. 4096x4096).')
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ImageError(f'the {kind} image ({width}x{height}) could not be decoded: '
                         'the file is truncated or corrupt.')
    if pixels.dtype == np.uint16:  # 16-bit PNG
        pixels = (pixels >> 8).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        raise ImageError(f'unsupported {kind} pixel type {pixels.dtype}: expected 8 or 16 bits.')
    return pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels


# ---------------------------------------------------------------------------------------
# Preprocessing: pixels -> a 28x28 MNIST-like digit.

def ink(gray, alpha=None):
    """Ink strength (H, W) float32, 0 = background, 255 = the most a pixel can differ from it,
    and the strongest ink of each row (H,), whatever the colours, from grey levels and alpha
    (uint8 (H, W); None when opaque).

    Transparency is composited away first. On a mostly transparent canvas the opaque pixels
    are the ink, so they go on a backdrop that contrasts with them (black or white ink both
    work); on a mostly opaque one the transparent pixels show the paper's colour. Then the
    background is the median of the border, and ink is how far a pixel is from it.
    Raises NoDigitError when no pixel is more than INK_THRESHOLD from the background.
    """
    gray = gray.astype(np.float32)
    if alpha is not None and alpha.min() < 255:
        alpha = np.divide(alpha, 255, dtype=np.float32)
        opaque = alpha > 0.5
        level = float(np.median(gray[opaque])) if opaque.any() else 0.0
        if opaque.mean() < 0.5:  # a transparent canvas: the opaque pixels are ink
            backdrop = 255.0 if level < 127.5 else 0.0
        else:  # an opaque picture: transparency shows its paper
            backdrop = level
        # gray * alpha + backdrop * (1 - alpha), in place: no 4096x4096 temporaries
        gray -= backdrop
        gray *= alpha
        gray += backdrop
    border = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    # |gray - background|, in place (cv2.absdiff would take a 4x1 image for a scalar)
    strength = np.abs(np.subtract(gray, _median(border), out=gray), out=gray)
    rows = strength.max(axis=1)
    if rows.max() <= INK_THRESHOLD * 255:
        raise NoDigitError('no digit found: the image is blank (nothing differs from the '
                           f'background by more than {INK_THRESHOLD:.0%}).')
    return strength, rows


def _median(border):
    # np.median of the border (an even count of values), without its generality: a fraction
    # of the time on a small canvas
    middle = len(border) // 2
    low, high = np.partition(border, (middle - 1, middle))[middle - 1:middle + 1]
    return float((low + high) / 2)


def to_mnist(rgba):
    """A (28, 28) float32 image in [0, 1], white ink on black, centred the MNIST way.

    The ink is cropped to its bounding box, scaled so its longest side is 20 px keeping the
    aspect ratio, and pasted into 28x28 with its centre of mass at (14, 14) (an integer
    shift, as in MNIST). Raises NoDigitError for a blank image.
    """
    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise ImageError(f'expected RGBA uint8 pixels (H, W, 4), got {rgba.dtype} {rgba.shape}.')
    return _to_mnist(cv2.cvtColor(rgba, cv2.COLOR_RGBA2GRAY), rgba[..., 3])


def prepare(data):
    """decode_image then to_mnist: (28, 28) float32 in [0, 1] from base64 text or bytes
    (without building the RGBA copy)."""
    pixels = _decode(data)
    if pixels.ndim == 2:
        return _to_mnist(pixels, None)
    if pixels.shape[2] == 3:
        return _to_mnist(cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY), None)
    return _to_mnist(cv2.cvtColor(pixels, cv2.COLOR_BGRA2GRAY), pixels[..., 3])


def _to_mnist(gray, alpha):
    strength, rows = ink(gray, alpha)
    peak = float(rows.max())
    # The ink's rows and columns: where some pixel exceeds INK_THRESHOLD (of the peak).
    top, bottom = _bounds(rows, INK_THRESHOLD * peak)
    left, right = _bounds(strength.max(axis=0), INK_THRESHOLD * peak)
    digit = strength[top:bottom, left:right]
    h, w = digit.shape
    scale = DIGIT_SIZE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2 wants (width, height)
    # INTER_AREA averages when shrinking (anti-aliasing, like MNIST); when enlarging it
    # degenerates to blocky nearest-neighbour, so enlarge bilinearly.
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    if size != (w, h):
        digit = cv2.resize(digit, size, interpolation=interpolation)
    h, w = digit.shape
    # Centre of mass from the row and column sums (one pass each over 20x20 at most).
    rows, columns = digit.sum(axis=1), digit.sum(axis=0)
    mass = float(rows.sum())
    centre = MNIST_SIZE // 2
    top = _offset(centre - float(rows @ _INDEX[:h]) / mass, h)
    left = _offset(centre - float(columns @ _INDEX[:w]) / mass, w)
    out = np.zeros((MNIST_SIZE, MNIST_SIZE), np.float32)
    # strongest ink = 1 (interpolation stays within the pixels' range, up to rounding)
    np.multiply(digit, 1 / peak, out=out[top:top + h, left:left + w])
    return np.minimum(out, 1, out=out)


def _bounds(profile, threshold):
    """[start, stop) of the ink along one axis, from the strongest ink of each line: where it
    exceeds ``threshold``, widened by one line on a side whose next line holds fainter ink
    (an anti-aliased edge, as in MNIST; JPEG noise further out stays outside)."""
    strong = np.flatnonzero(profile > threshold)
    start, stop = strong[0], strong[-1] + 1
    return (start - (start > 0 and profile[start - 1] > 0),
            stop + (stop < len(profile) and profile[stop] > 0))


def _offset(shift, length):
    # Round to whole pixels (no blur), but keep the whole digit inside the field.
    return min(max(round(shift), 0), MNIST_SIZE - length)

