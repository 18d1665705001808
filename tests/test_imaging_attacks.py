"""imaging.py against hostile files (issue #11): headers that lie about the size, files that
cost far more to decode than their size suggests, and bytes that made OpenCV raise.

The files are built by hand around small real images encoded by OpenCV; OpenCV's own limit
is checked in a fresh interpreter, since it is read once, when cv2 is imported."""
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

import imaging

ROOT = Path(__file__).resolve().parent.parent


def encode(image, ext='.jpg', params=()):
    ok, data = cv2.imencode(ext, image, list(params))
    assert ok
    return data.tobytes()


def small_jpeg(width=8, height=8, params=()):
    """A real JPEG whose frame header (SOF) is patched to announce width x height."""
    jpeg = bytearray(encode(np.full((8, 8), 200, np.uint8), '.jpg', params))
    sof = next(jpeg.index(m) for m in (b'\xff\xc0', b'\xff\xc2') if m in jpeg)
    jpeg[sof + 5:sof + 9] = struct.pack('>HH', height, width)
    return bytes(jpeg)


FAKE_SOF = b'\xff\xc0\x00\x0b\x08\x00\x10\x00\x10\x01\x01\x11\x00'  # 16x16, one component


def hidden_frame(width, height, before):
    """The attacker's file: SOI, `before` (bytes libjpeg skips), an 8x8 JPEG without its SOI
    whose SOF announces width x height, then a fake 16x16 SOF after its end."""
    return b'\xff\xd8' + before + small_jpeg(width, height)[2:] + FAKE_SOF


def skipped_by_length(body_length):
    # FF 00 is no marker (libjpeg skips it); a walk that reads a length after it jumps
    # over the real frame header to the fake one.
    return b'\xff\x00' + struct.pack('>H', body_length + 2)


BEFORE = {
    'FF 00 and a length': lambda n: skipped_by_length(n),
    'stray bytes': lambda n: b'\xff\xfe\x00\x04hi' + b'\x00\x01junk',  # after a comment
    'fill bytes': lambda n: b'\xff' * 7,
    'FF 00 pairs': lambda n: b'\xff\x00' * 5 + b'\xff\xff\x00',
}


@pytest.mark.parametrize('before', BEFORE)
def test_jpeg_size_is_the_frame_header_libjpeg_decodes(before):
    prefix = BEFORE[before](len(small_jpeg()) - 2)
    data = hidden_frame(32768, 32768, prefix)
    assert imaging.image_size(data) == ('JPEG', 32768, 32768)
    start = time.process_time()
    with pytest.raises(imaging.ImageTooLarge, match='32768x32768'):
        imaging.decode_image(data)
    assert time.process_time() - start < 1  # refused from the header, not decoded
    # Under the limit, the size check and the decoder agree on the frame's size.
    ok = hidden_frame(8, 8, prefix)
    assert imaging.image_size(ok) == ('JPEG', 8, 8)
    assert imaging.decode_image(ok).shape == (8, 8, 4)


def test_jpeg_over_opencvs_limit_is_too_large_not_an_opencv_error():
    # 32769x32768 is over OpenCV's own pixel limit too: it raised cv2.error (a 500).
    prefix = skipped_by_length(len(small_jpeg()) - 2)
    with pytest.raises(imaging.ImageTooLarge, match='32769x32768'):
        imaging.decode_image(hidden_frame(32769, 32768, prefix))


@pytest.mark.parametrize('data, message', [
    (b'\xff\xd8' + FAKE_SOF + small_jpeg()[2:], 'second frame header'),
    (b'\xff\xd8\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00', 'scan before its frame header'),
    (b'\xff\xd8\xff\xd9', 'ends before its first scan'),
    (b'\xff\xd8\xff\xc5' + FAKE_SOF[2:], 'unsupported JPEG marker 0xC5'),
    (b'\xff\xd8\xff\xe0\x00\x01' + small_jpeg()[2:], 'segment length 1'),
    (b'\xff\xd8\xff\xe0\x01\x00' + b'\x00' * 10, 'past the end'),
    (b'\xff\xd8\xff\xfe\x00\x02' + b'\x00' * 100, 'no marker'),
])
def test_jpeg_headers_libjpeg_would_refuse_are_refused_by_the_size_check(data, message):
    with pytest.raises(imaging.ImageError, match=message):
        imaging.image_size(data)


def png_chunk(kind, body):
    return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))


def png_header(width, height, depth=8, colour=0):
    """A PNG announcing width x height (valid CRCs) with almost no pixels."""
    ihdr = struct.pack('>IIBBBBB', width, height, depth, colour, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + png_chunk(b'IHDR', ihdr) +
            png_chunk(b'IDAT', zlib.compress(bytes(2))) + png_chunk(b'IEND', b''))


def bmp_header(width, height):
    """A 54-byte BMP (BITMAPINFOHEADER, 24 bits) announcing width x height, with no pixels."""
    return (b'BM' + struct.pack('<IHHI', 54, 0, 0, 54) +
            struct.pack('<IiiHHIIiiII', 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0))


def test_a_side_over_opencvs_cap_is_too_large_not_an_opencv_error():
    # 2,000,000 x 1 is within MAX_PIXELS but over OpenCV's width cap: it raised cv2.error.
    assert len(bmp_header(2_000_000, 1)) == 54
    with pytest.raises(imaging.ImageTooLarge, match='2000000x1'):
        imaging.decode_image(bmp_header(2_000_000, 1))
    with pytest.raises(imaging.ImageTooLarge, match='1x2000000'):
        imaging.prepare(png_header(1, 2_000_000))


def run_python(code, **env):
    """stdout of `code` run by a fresh interpreter in the project folder (env: variables to
    set; a value None removes one)."""
    environ = {k: v for k, v in os.environ.items() if k != 'OPENCV_IO_MAX_IMAGE_PIXELS'}
    environ.update({k: v for k, v in env.items() if v is not None})
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=environ,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


OPENCV_DECODES = '''
import struct, zlib, numpy as np
{imports}
from tests.test_imaging_attacks import png_header
def opencv(width, height):
    try:
        cv2.imdecode(np.frombuffer(png_header(width, height), np.uint8), cv2.IMREAD_UNCHANGED)
        return 'decoded'   # None here: no pixels, but the size was accepted
    except cv2.error as e:
        return 'refused' if 'CV_IO_MAX_IMAGE_PIXELS' in str(e) else str(e)
print(opencv(4096, 4096), opencv(4097, 4096))
'''


def test_opencv_refuses_images_over_max_pixels_when_imaging_is_imported_first():
    # The second wall: OpenCV's own limit, set by imaging before cv2 is imported.
    assert run_python(OPENCV_DECODES.format(imports='import imaging, cv2')) == 'decoded refused'
    # OpenCV reads the variable once, at import: set afterwards, it has no effect (so
    # imaging must be imported before cv2, as server.py does; it logs a warning otherwise).
    late = run_python(OPENCV_DECODES.format(imports='import cv2, imaging'))
    assert late == 'decoded decoded'
    # The server's process has the limit.
    assert run_python(OPENCV_DECODES.format(imports='import server, cv2')) == 'decoded refused'


def test_any_opencv_refusal_is_an_image_error():
    # With OpenCV's limit lower than ours, its cv2.error must come out as ImageTooLarge.
    code = ('import imaging, numpy as np, cv2\n'
            'ok, png = cv2.imencode(".png", np.zeros((40, 40), np.uint8))\n'
            'try:\n'
            '    imaging.prepare(png.tobytes())\n'
            'except imaging.ImageTooLarge as e:\n'
            '    print("ImageTooLarge", e)\n')
    out = run_python(code, OPENCV_IO_MAX_IMAGE_PIXELS='1000')
    assert out.startswith('ImageTooLarge') and '40x40' in out


def progressive_bomb(scans, width=4096, height=4096):
    """A progressive JPEG announcing width x height, then `scans` empty DC scans: each costs
    a pass over every block of the image, from 10 bytes of file."""
    jpeg = small_jpeg(width, height, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    first = jpeg.index(b'\xff\xda')
    scan = jpeg[first:jpeg.index(b'\xff', first + 2)]  # the first scan's header, no data
    return jpeg[:first] + scan * scans + b'\xff\xd9'


def test_progressive_jpeg_with_thousands_of_scans_is_refused_cheaply():
    bomb = progressive_bomb(5000)
    assert len(bomb) < 100_000
    start = time.process_time()
    with pytest.raises(imaging.ImageError, match='5000 scans'):
        imaging.image_size(bomb)
    with pytest.raises(imaging.ImageError, match=f'at most {imaging.MAX_JPEG_SCANS}'):
        imaging.prepare(bomb)
    assert time.process_time() - start < 1
    # A real progressive JPEG (about ten scans) is well within the bound.
    real = encode(np.full((64, 64, 3), 90, np.uint8), '.jpg', [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert 5 <= real.count(b'\xff\xda') < imaging.MAX_JPEG_SCANS
    assert imaging.decode_image(real).shape == (64, 64, 4)


@pytest.mark.parametrize('kind, width, height, cheap', [
    ('PNG', 160, 160, True), ('BMP', 56, 56, True), ('JPEG', 160, 160, True),
    ('WebP', 56, 56, True), ('PNG', 161, 160, False), ('JPEG', 4096, 4096, False),
    ('GIF', 10, 10, False),
])
def test_cheap_to_decode_only_for_small_known_formats(kind, width, height, cheap):
    assert imaging.cheap_to_decode(kind, width, height) is cheap


def test_what_image_size_accepts_is_cheap_when_small():
    # A small JPEG with many scans never reaches the decoder: image_size refuses it.
    with pytest.raises(imaging.ImageError, match='scans'):
        imaging.image_size(progressive_bomb(imaging.MAX_JPEG_SCANS + 1, 56, 56))
    kind, width, height = imaging.image_size(progressive_bomb(imaging.MAX_JPEG_SCANS, 56, 56))
    assert imaging.cheap_to_decode(kind, width, height)


PEAK = '''
import imaging, cv2, numpy as np, sys
kind, depth = sys.argv[1], np.dtype(sys.argv[2])
level = np.iinfo(depth).max // 255   # 1 or 257: 8-bit levels in either depth
image = np.full((4096, 4096, 4 if kind == 'png' else 3), 200 * level, depth)
image[:, :2048] = 50 * level          # half dark, half light, and every other row transparent
if kind == 'png':
    image[::2, :, 3] = 0
data = cv2.imencode('.' + kind, image)[1].tobytes()
del image
def kilobytes(key):
    return next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith(key))
with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')                      # resets the peak (VmHWM) to the current size
before = kilobytes('VmRSS:')
getattr(imaging, sys.argv[3])(data)
print((kilobytes('VmHWM:') - before) // 1024)
'''


@pytest.mark.skipif(not os.access('/proc/self/clear_refs', os.W_OK), reason='Linux /proc only')
@pytest.mark.parametrize('kind, depth, function, bound', [
    # decoded sizes 64, 128 and 48 MB; OpenCV's imdecode alone peaks at twice that (it
    # decodes into its own buffer, copied into a NumPy array)
    ('png', 'uint8', 'prepare', 160), ('png', 'uint16', 'prepare', 290),
    ('png', 'uint16', 'decode_image', 290), ('jpg', 'uint8', 'prepare', 120),
])
def test_decoding_a_4096x4096_image_peaks_near_what_opencv_needs(kind, depth, function, bound):
    code = PEAK.replace('sys.argv[1], np.dtype(sys.argv[2])', f'{kind!r}, np.dtype({depth!r})')
    peak = int(run_python(code.replace('sys.argv[3]', repr(function))))
    assert peak < bound, f'{function} of a {depth} {kind}: +{peak} MB'


def test_a_phone_photo_with_exif_rotation_passes_the_size_match():
    # The decoded size must equal the header's: OpenCV must not rotate by EXIF orientation
    # (IMREAD_UNCHANGED does not), or every upright phone photo would be refused.
    jpeg = encode(np.zeros((20, 40, 3), np.uint8))
    tiff = (b'II*\x00' + struct.pack('<IH', 8, 1) + struct.pack('<HHIHH', 0x0112, 3, 1, 6, 0) +
            struct.pack('<I', 0))  # one entry: orientation 6, "rotate 90 degrees"
    exif = b'Exif\x00\x00' + tiff
    photo = jpeg[:2] + b'\xff\xe1' + struct.pack('>H', len(exif) + 2) + exif + jpeg[2:]
    assert cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR).shape == (40, 20, 3)
    assert imaging.image_size(photo) == ('JPEG', 40, 20)
    assert imaging.decode_image(photo).shape == (20, 40, 4)


@pytest.mark.parametrize('filler', [b'\xff', b'\xff\x00', b'\xff' * 999 + b'\x00', b'\x00',
                                    b'\xff\xfe\x00\x02'])
def test_a_jpeg_header_of_filler_is_refused_in_linear_time(filler):
    # A megabyte of fill bytes, FF 00 pairs, junk or empty comments before any frame header:
    # the walk (a regular expression for what libjpeg skips) must not backtrack.
    data = b'\xff\xd8\xff\xfe\x00\x02' + filler * (2 ** 20 // len(filler))
    start = time.process_time()
    with pytest.raises(imaging.ImageError, match='broken JPEG'):
        imaging.image_size(data)
    assert time.process_time() - start < 1
