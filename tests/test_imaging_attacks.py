"""imaging.py against hostile files (issue #11): headers that lie about the size, files that
cost far more to decode than their size suggests, and bytes that made OpenCV raise; PNG
chunks that inflate to megabytes (issue #20), here and on a real server.

The files are built by hand around small real images encoded by OpenCV; OpenCV's own limit
is checked in a fresh interpreter, since it is read once, when cv2 is imported."""
import base64
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

import imaging
from tests.conftest import Process
from tests.test_attacks import MB, rss, server_args, timed_get

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


# ---------------------------------------------------------------------------------------
# PNG chunks (issue #20, 1): text and profiles that inflate to megabytes each, image data
# that inflates past the announced rows, chunk lists that are too long or broken. Only the
# chunks that make the pixels may reach the decoder, and their cost is bounded by the size
# the header announces.

def digit_png(side=28):
    """A real PNG from OpenCV (IHDR, IDAT, IEND only): a white stroke on black."""
    image = np.zeros((side, side), np.uint8)
    cv2.line(image, (side // 5, side // 6), (side * 3 // 4, side * 5 // 6), 255, 3)
    png = encode(image, '.png')
    assert [kind for kind, _ in png_chunks(png)] == [b'IHDR', b'IDAT', b'IEND']
    return png


def png_chunks(png):
    """(type, whole chunk) of each chunk of a well-formed PNG, in order, up to IEND."""
    chunks, i = [], 8
    while i < len(png):
        length, kind = struct.unpack('>I4s', png[i:i + 8])
        chunks.append((kind, png[i:i + 12 + length]))
        i += 12 + length
        if kind == b'IEND':
            break
    return chunks


def with_chunks(png, before=(), after=()):
    """``png`` with whole chunks inserted after IHDR (``before`` the image data) and before
    IEND (``after`` it)."""
    return png[:33] + b''.join(before) + png[33:-12] + b''.join(after) + png[-12:]


def icc_profile(size):
    """An ICC profile header libpng accepts for a grey image, announcing ``size`` bytes,
    then zeros: libpng inflates all of it to check it."""
    header = (struct.pack('>II', size, 0) + b'\x02\x10\x00\x00mntrGRAYXYZ ' + bytes(12) +
              b'acsp' + bytes(24) + struct.pack('>I', 0) +
              struct.pack('>iii', 0xF6D6, 0x10000, 0xD32D) + bytes(48))
    return header + bytes(4) + bytes(size - len(header) - 4)  # no tags


INFLATES_TO = 8_000_000  # libpng's per-chunk limit (png_user_chunk_malloc_max) is 8 MB
COMPRESSED_CHUNKS = {  # about 7.8 KB each
    b'zTXt': b'Comment\0\0' + zlib.compress(bytes(INFLATES_TO), 9),
    b'iTXt': b'Comment\0\1\0\0\0' + zlib.compress(bytes(INFLATES_TO), 9),
    b'iCCP': b'icc\0\0' + zlib.compress(icc_profile(INFLATES_TO), 9),
}


@pytest.fixture
def decoder_input(monkeypatch):
    """The bytes OpenCV's decoder is given, one entry per call."""
    seen, imdecode = [], cv2.imdecode

    def spy(buffer, flags):
        seen.append(bytes(buffer))
        return imdecode(buffer, flags)
    monkeypatch.setattr(cv2, 'imdecode', spy)
    return seen


@pytest.mark.parametrize('count', [1, 100, 999])
@pytest.mark.parametrize('kind', COMPRESSED_CHUNKS)
def test_compressed_text_and_profiles_never_reach_the_decoder(decoder_input, kind, count):
    plain = digit_png()
    chunk = png_chunk(kind, COMPRESSED_CHUNKS[kind])
    bomb = with_chunks(plain, [chunk] * count)
    if count * len(chunk) <= imaging.MAX_PNG_EXTRA_BYTES:  # stripped: the same pixels
        np.testing.assert_array_equal(imaging.decode_image(bomb), imaging.decode_image(plain))
        assert imaging.strip_metadata(bomb) == plain
        assert decoder_input == [plain, plain]
    else:
        with pytest.raises(imaging.ImageError, match='more than 65536 bytes of chunks other '
                                                     f'than image data .* {kind.decode()} '):
            imaging.prepare(bomb)
        assert decoder_input == []


EXIF = b'MM\x00*' + struct.pack('>IH', 8, 1) + struct.pack('>HHIHH', 0x0112, 3, 1, 6, 0) + bytes(4)
ANCILLARY = [  # (type, data): chunks that carry no pixels, known, unknown or misplaced
    (b'tEXt', b'Comment\0hello'), (b'zTXt', b'Comment\0\0' + zlib.compress(b'hello')),
    (b'iTXt', b'Comment\0\0\0en\0\0hello'), (b'iCCP', COMPRESSED_CHUNKS[b'iCCP']),
    (b'eXIf', EXIF), (b'gAMA', struct.pack('>I', 45455)), (b'sBIT', b'\x04'),
    (b'sPLT', b'pal\0\x08' + bytes(6 * 3)), (b'pHYs', struct.pack('>IIB', 2835, 2835, 1)),
    (b'tIME', struct.pack('>HBBBBB', 2026, 1, 1, 0, 0, 0)), (b'bKGD', b'\0\x80'),
    (b'prVt', b'private ' * 10), (b'hIST', bytes(2)), (b'cHRM', bytes(32)),
    (b'acTL', struct.pack('>II', 2, 0)),
    (b'fcTL', struct.pack('>IIIIIHHBB', 0, 28, 28, 0, 0, 1, 10, 0, 0)),
]


def test_chunks_without_pixels_anywhere_are_left_out(decoder_input):
    plain = digit_png()
    chunks = [png_chunk(kind, data) for kind, data in ANCILLARY]
    # an animated PNG: its second frame (fcTL, fdAT) after the default image
    frame = zlib.compress(bytes(28 * 29))
    animated = [png_chunk(b'fcTL', struct.pack('>IIIIIHHBB', 1, 28, 28, 0, 0, 1, 10, 0, 0)),
                png_chunk(b'fdAT', struct.pack('>I', 2) + frame)]
    # ... and an IDAT split around chunks of every type, and bytes after IEND
    idat = png_chunks(plain)[1][1][8:-4]
    split = [png_chunk(b'IDAT', idat[:10]), *chunks, png_chunk(b'IDAT', idat[10:])]
    hostile = (plain[:33] + b''.join(chunks) + b''.join(split) + b''.join(animated) +
               b''.join(chunks) + plain[-12:] + png_chunk(b'zTXt', COMPRESSED_CHUNKS[b'zTXt']) +
               b'junk' * 100)
    stripped = imaging.strip_metadata(hostile)
    assert [kind for kind, _ in png_chunks(stripped)] == [b'IHDR', b'IDAT', b'IDAT', b'IEND']
    np.testing.assert_array_equal(imaging.decode_image(hostile), imaging.decode_image(plain))
    assert decoder_input[0] == stripped
    # Other formats are unchanged; anything but bytes is a TypeError naming it.
    jpeg = small_jpeg()
    assert imaging.strip_metadata(jpeg) == jpeg
    with pytest.raises(TypeError, match='got str'):
        imaging.strip_metadata('iVBOR')


def test_palette_and_transparency_chunks_reach_the_decoder():
    # PLTE and tRNS make the pixels of a palette image: kept (a second tRNS is ignored).
    rows = b''.join(b'\0' + bytes([i % 3] * 28) for i in range(28))
    palette = png_chunk(b'PLTE', bytes([0, 0, 0, 255, 255, 255, 0, 0, 255]))
    alpha = png_chunk(b'tRNS', bytes([255, 255, 0]))
    png = (png_header(28, 28, 8, 3)[:33] + png_chunk(b'tEXt', b'a\0b') + palette + alpha +
           png_chunk(b'tRNS', bytes(3)) + png_chunk(b'IDAT', zlib.compress(rows)) +
           png_chunk(b'IEND', b''))
    stripped = imaging.strip_metadata(png)
    assert [kind for kind, _ in png_chunks(stripped)] == [b'IHDR', b'PLTE', b'tRNS', b'IDAT',
                                                           b'IEND']
    rgba = imaging.decode_image(png)
    assert (rgba[0, 0] == [0, 0, 0, 255]).all() and (rgba[1, 0] == [255, 255, 255, 255]).all()
    assert (rgba[2, 0] == [0, 0, 255, 0]).all()  # index 2: blue, transparent


def rows_only(width, height, depth, colour, interlace, extra=0):
    """A PNG of zeros whose image data is exactly the filtered rows libpng reads for the
    header (plus ``extra`` bytes); a palette of one entry when it needs one."""
    size = imaging._png_data_size(width, height, depth, colour, interlace) + extra
    ihdr = struct.pack('>IIBBBBB', width, height, depth, colour, 0, 0, interlace)
    return (b'\x89PNG\r\n\x1a\n' + png_chunk(b'IHDR', ihdr) +
            (png_chunk(b'PLTE', bytes(3)) if colour == 3 else b'') +
            png_chunk(b'IDAT', zlib.compress(bytes(size))) + png_chunk(b'IEND', b''))


def libpng_warnings(data):
    """What libpng prints on stderr (file descriptor 2) while OpenCV decodes ``data``."""
    with tempfile.TemporaryFile() as err:
        saved = os.dup(2)
        os.dup2(err.fileno(), 2)
        try:
            pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        return pixels, err.read().decode(errors='replace')


@pytest.mark.parametrize('interlace', [0, 1])
@pytest.mark.parametrize('colour, depth', [  # every pair the PNG specification allows
    (0, 1), (0, 2), (0, 4), (0, 8), (0, 16), (2, 8), (2, 16), (3, 1), (3, 2), (3, 4), (3, 8),
    (4, 8), (4, 16), (6, 8), (6, 16)])
def test_the_image_data_size_is_what_libpng_reads(colour, depth, interlace):
    # The bound on the image data is exact: libpng reads that many bytes without a word
    # ("Not enough image data" below it, "Too much image data" above), and one byte more
    # is refused before the decoder.
    for width, height in [(1, 1), (3, 5), (9, 17), (28, 28), (13, 2)]:
        exact = rows_only(width, height, depth, colour, interlace)
        pixels, warnings = libpng_warnings(exact)
        assert pixels is not None and pixels.shape[:2] == (height, width) and not warnings
        assert imaging.decode_image(exact).shape == (height, width, 4)
        with pytest.raises(imaging.ImageError, match='inflates to more than'):
            imaging.decode_image(rows_only(width, height, depth, colour, interlace, extra=1))


def test_image_data_inflating_past_the_announced_size_is_refused_before_decoding(
        decoder_input):
    # 28x28 grey announces 812 bytes of rows; 50 KB of IDAT inflating to 50 MB more made
    # libpng inflate all of it (about a second), one core busy, for a 28x28 image.
    c = zlib.compressobj(9)
    idat = c.compress(bytes(28 * 29)) + c.compress(bytes(50_000_000)) + c.flush()
    bomb = png_header(28, 28)[:33] + png_chunk(b'IDAT', idat) + png_chunk(b'IEND', b'')
    start = time.process_time()
    with pytest.raises(imaging.ImageError, match='inflates to more than the 812 bytes a '
                                                 '28x28 image'):
        imaging.decode_image(bomb)
    assert time.process_time() - start < 0.2 and decoder_input == []


def broken_png(*chunks, signature=b'\x89PNG\r\n\x1a\n'):
    return signature + b''.join(chunks)


PLAIN = digit_png()
IHDR, IDAT, IEND = (chunk for _, chunk in png_chunks(PLAIN))


@pytest.mark.parametrize('data, message', [
    (PLAIN[:-6], r'ends at byte \d+, inside the chunk starting at byte \d+.*truncated'),
    (PLAIN[:-12], 'inside the chunk starting at byte'),  # no IEND
    (broken_png(IHDR, struct.pack('>I', 2 ** 31) + IDAT[4:], IEND), 'declares 2147483648'),
    (broken_png(IHDR, struct.pack('>I', 2 ** 32 - 1) + IDAT[4:], IEND), 'declares 4294967295'),
    (broken_png(IHDR, IDAT[:-4] + bytes(4), IEND), 'chunk IDAT at byte 33 fails its CRC'),
    (broken_png(png_chunk(b'tEXt', b'a\0b'), IHDR, IDAT, IEND), 'no complete IHDR'),
    (broken_png(png_chunk(b'IHDR', IHDR[8:-4] + b'\0'), IDAT, IEND),
     'first chunk must be a 13-byte IHDR, got a 14-byte IHDR'),
    (broken_png(IHDR, png_chunk(b'a1b2', b''), IDAT, IEND), "invalid chunk type b'a1b2'"),
    (broken_png(IHDR, png_chunk(b'QQQQ', b''), IDAT, IEND), 'unknown critical chunk QQQQ'),
    (broken_png(IHDR, IDAT, png_chunk(b'PLTE', bytes(3)), IEND), 'PLTE chunk at byte'),
    (broken_png(IHDR, IHDR, IDAT, IEND), 'a second IHDR at byte 33'),
    (broken_png(IHDR, IEND), 'IEND before any image data'),
    (broken_png(png_chunk(b'IHDR', struct.pack('>IIBBBBB', 28, 28, 3, 0, 0, 0, 0)), IDAT,
                IEND), 'bit depth 3 with colour type 0'),
    (broken_png(png_chunk(b'IHDR', struct.pack('>IIBBBBB', 28, 28, 8, 0, 0, 0, 2)), IDAT,
                IEND), 'interlace 2'),
    (broken_png(IHDR, png_chunk(b'IDAT', b'not zlib'), IEND), 'not a valid zlib stream'),
    (broken_png(IHDR, IDAT, png_chunk(b'IDAT', b'') * 10_000, IEND),  # MAX_PNG_CHUNKS
     'more than 10000 chunks'),
    (broken_png(IHDR, png_chunk(b'tEXt', b'') * 6000, IDAT, IEND), 'more than 65536 bytes'),
])
def test_broken_png_chunk_lists_are_refused_saying_what_is_wrong(decoder_input, data, message):
    with pytest.raises(imaging.ImageError, match=message):
        imaging.decode_image(data)
    assert decoder_input == []


# On a real server (python server.py): the bombs against a control of the same length, a
# valid PNG with zeros after IEND (which no decoder reads), measured in the same test.

def as_body(png):
    return {'image': 'data:image/png;base64,' + base64.b64encode(png).decode()}


def while_posting(s, path, body):
    """(the answer, its seconds, the slowest /health meanwhile (seconds), the most the
    server's memory grew meanwhile (MB)): /health is asked one call after another until the
    answer comes, at least once."""
    result, before = {}, rss(s)

    def send():
        start = time.perf_counter()
        result['answer'] = s.post(path, body, timeout=120)
        result['seconds'] = time.perf_counter() - start
    thread = threading.Thread(target=send)
    thread.start()
    slowest = growth = 0.0
    while True:
        health, seconds = timed_get(s.port, '/health', timeout=120)
        assert health.status == 200, health
        slowest, growth = max(slowest, seconds), max(growth, (rss(s) - before) / MB)
        if not thread.is_alive():
            break
    thread.join()
    return result['answer'], result['seconds'], slowest, growth


def compared_with_control(s, path, bomb, control):
    """The bomb's answer, after checking it cost no more than the control: answered within
    0.5 s of it, /health within 0.1 s of its slowest, memory within 50 MB of its growth."""
    expected = while_posting(s, path, as_body(control))
    answer, seconds, slowest, growth = while_posting(s, path, as_body(bomb))
    assert expected[0].status == 200, expected[0]
    assert seconds < expected[1] + 0.5, f'answered in {seconds:.2f} s, control {expected[1]:.2f} s'
    assert slowest < expected[2] + 0.1, f'/health took {slowest:.2f} s, control {expected[2]:.2f} s'
    assert growth < expected[3] + 50, f'memory grew {growth:.0f} MB, control {expected[3]:.0f} MB'
    return answer


@pytest.mark.parametrize('kind', COMPRESSED_CHUNKS)
def test_png_chunk_bombs_cost_a_server_what_their_bytes_cost(tmp_path, kind):
    # Before: 100 zTXt chunks (780 KB, 28x28, so decoded on the event loop) stalled every
    # client for seconds; each chunk inflated to 8 MB.
    plain = digit_png()
    chunk = png_chunk(kind, COMPRESSED_CHUNKS[kind])
    with Process(tmp_path, *server_args(tmp_path)) as s:
        assert s.post('/predict', as_body(plain)).status == 200  # warm up
        for count in (1, 100, 999):
            bomb = with_chunks(plain, [chunk] * count)
            control = plain + bytes(len(bomb) - len(plain))
            for path in ('/predict', '/compare'):
                answer = compared_with_control(s, path, bomb, control)
                if count * len(chunk) <= imaging.MAX_PNG_EXTRA_BYTES:  # the chunks ignored
                    assert answer.status == 200, answer
                else:
                    assert answer.status == 400 and 'IDAT' in answer.json['error'], answer


def test_a_sample_is_stored_without_its_chunks(tmp_path):
    # Eight zTXt chunks fit under the 64 KiB a sample may have: accepted, at the cost of the
    # pixels alone, and stored (and served back) without them.
    plain = digit_png()
    bomb = with_chunks(plain, [png_chunk(b'zTXt', COMPRESSED_CHUNKS[b'zTXt'])] * 8)
    assert len(bomb) < 64 * 1024
    control = plain + bytes(len(bomb) - len(plain))
    with Process(tmp_path, *server_args(tmp_path)) as s:
        assert s.post('/predict', as_body(plain)).status == 200  # warm up
        body = {**as_body(bomb), 'label': 4}
        expected = while_posting(s, '/predict', as_body(control))
        answer, seconds, slowest, growth = while_posting(s, '/samples', body)
        assert answer.status == 201, answer
        assert seconds < expected[1] + 0.5 and slowest < expected[2] + 0.1, (seconds, slowest)
        assert growth < expected[3] + 50, growth
        stored = s.get(f'/samples/{answer.json["id"]}/image?original=1')
        assert stored.status == 200 and stored.body == plain
        # the same drawing with other chunks is the same sample
        again = s.post('/samples', {**as_body(with_chunks(plain, after=[png_chunk(b'tEXt',
                                                                               b'a\0b')])),
                                    'label': 4})
        assert again.status == 200 and again.json['id'] == answer.json['id'], again


@pytest.mark.parametrize('junk', [b'A', b'\xff\x00', b'\xff'])
def test_a_jpeg_walks_at_most_max_jpeg_gaps_of_junk_between_segments(junk):
    # libjpeg skips junk between header segments (with a warning); the walk over it is one
    # regular expression call: 12 MB of it held the GIL for 0.4 s. Up to MAX_JPEG_GAPS bytes
    # are read as libjpeg reads them, more are refused without being walked.
    jpeg = small_jpeg(20, 40)
    cut = 4 + struct.unpack('>H', jpeg[4:6])[0]  # after SOI and the first segment (APP0)
    assert jpeg[2:4] == b'\xff\xe0'

    def with_gap(n):
        return jpeg[:cut] + junk * (n // len(junk)) + jpeg[cut:]
    assert imaging.image_size(with_gap(imaging.MAX_JPEG_GAPS - 2)) == ('JPEG', 20, 40)
    with pytest.raises(imaging.ImageError, match='more than 65536 bytes of fill or junk'):
        imaging.image_size(with_gap(imaging.MAX_JPEG_GAPS + 2))
    huge = with_gap(12 * MB)
    start = time.process_time()
    with pytest.raises(imaging.ImageError, match='more than 65536 bytes of fill or junk'):
        imaging.image_size(huge)
    spent = time.process_time() - start
    start = time.process_time()
    huge.count(b'\xff\xda')  # what counting the scans costs: the bound of the whole walk
    assert spent < 5 * (time.process_time() - start) + 0.01, spent


@pytest.mark.parametrize('text', ['data:' + 'a' * (16 * MB), 'data:' + ';base64' * (2 * MB)])
def test_a_data_url_without_its_comma_is_refused_reading_its_head_only(text):
    # Before: one regular expression call over the whole text looked for ";base64," (0.2 s
    # for 16 MiB, the GIL held), more than decoding as much base64 costs.
    plain = 'QUFB' * (len(text) // 4)
    start = time.process_time()
    imaging.decode_base64(plain)
    control = time.process_time() - start
    start = time.process_time()
    with pytest.raises(imaging.ImageError, match='a data URL must look like'):
        imaging.decode_base64(text)
    assert time.process_time() - start < control, control
    assert imaging.decode_base64('data:image/png;charset=x;base64,QUFB') == b'AAA'
