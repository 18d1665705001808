"""Property tests (hypothesis) of imaging.py on random and mutated bytes and on random valid
images, and schemathesis against /openapi.json on a real server: no 5xx, answers as
documented, and the live net unchanged by every rejected request."""
import base64
import hashlib
import json
import struct
import zlib
from unittest import mock

import cv2
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

import imaging
from service import Settings, create_app
from service.openapi import openapi_document
from service.store import weights_digest
from tests.conftest import Server, write_models
from tests.test_imaging_attacks import bmp_header, png_chunk, png_header

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SIGNATURES = [b'\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR', b'\xff\xd8\xff', b'BM',
              b'RIFF\x00\x00\x00\x00WEBP', b'RIFF\x00\x00\x00\x00WEBPVP8L',
              b'RIFF\x00\x00\x00\x00WEBPVP8X']


def decoded_or_image_error(data):
    """decode_image's answer: an RGBA array, or None when it raised ImageError (anything
    else escapes and fails the test)."""
    try:
        rgba = imaging.decode_image(data)
    except imaging.ImageError as e:
        assert str(e), 'an ImageError must say what is wrong'
        return None
    assert rgba.dtype == np.uint8 and rgba.ndim == 3 and rgba.shape[2] == 4
    assert rgba.shape[0] * rgba.shape[1] <= imaging.MAX_PIXELS
    return rgba


def check_mnist(rgba):
    """to_mnist gives a 28x28 image in [0, 1] with ink, or raises NoDigitError."""
    try:
        x = imaging.to_mnist(rgba)
    except imaging.NoDigitError:
        return None
    assert x.shape == (28, 28) and x.dtype == np.float32
    assert np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    assert x.max() > 0  # a thin line shrunk 30 times may come out faint, but not empty
    return x


@FUZZ
@given(st.one_of(st.binary(max_size=600),
                 st.builds(bytes.__add__, st.sampled_from(SIGNATURES), st.binary(max_size=600))))
def test_random_bytes_are_an_image_error_or_an_image(data):
    rgba = decoded_or_image_error(data)
    if rgba is not None:
        check_mnist(rgba)


@FUZZ
@given(st.one_of(st.text(max_size=300),
                 st.builds(str.__add__, st.sampled_from(['data:image/png;base64,', 'data:,',
                                                         'iVBORw0KGgo', 'data:;base64,/9j/']),
                           st.text(alphabet='ABCabc019+/-_=\n ,;:', max_size=300))))
def test_random_text_is_an_image_error_or_an_image(text):
    decoded_or_image_error(text)


@FUZZ
@given(st.binary(min_size=1, max_size=300),
       st.sampled_from(['plain', 'url-safe', 'unpadded', 'wrapped', 'data URL']))
def test_every_base64_form_decodes_to_the_bytes(data, form):
    text = base64.b64encode(data).decode()
    text = {'plain': text, 'url-safe': base64.urlsafe_b64encode(data).decode(),
            'unpadded': text.rstrip('='), 'data URL': 'data:image/png;base64,' + text,
            'wrapped': '\n'.join(text[i:i + 8] for i in range(0, len(text), 8))}[form]
    assert imaging.decode_base64(text) == data


def encode(image, ext):
    params = [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == '.webp' else []  # 101 = lossless
    ok, data = cv2.imencode(ext, image, params)
    assert ok
    return data.tobytes()


@st.composite
def images(draw, max_side=160):
    """(pixels as cv2 holds them, format): any size, 1, 3 or 4 channels, 8 or 16 bits."""
    ext = draw(st.sampled_from(['.png', '.bmp', '.webp', '.jpg']))
    long_side = draw(st.sampled_from([max_side, 2000]))  # sometimes a thin strip
    height = draw(st.integers(1, long_side))
    width = draw(st.integers(1, max_side if height > max_side else long_side))
    channels = draw(st.sampled_from([1, 3] if ext in ('.jpg', '.bmp') else [1, 3, 4]))
    deep = ext == '.png' and draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    kind = draw(st.sampled_from(['noise', 'flat', 'stroke']))
    dtype, top = (np.uint16, 65535) if deep else (np.uint8, 255)
    shape = (height, width) if channels == 1 else (height, width, channels)
    if kind == 'noise':
        image = rng.integers(0, top + 1, shape, dtype=dtype)
    else:
        image = np.full(shape, rng.integers(0, top + 1), dtype)
        if kind == 'stroke':
            a, b = rng.integers(0, [width, height], (2, 2))
            colour = tuple(int(c) for c in rng.integers(0, top + 1, 4))
            cv2.line(image, tuple(int(v) for v in a), tuple(int(v) for v in b),
                     colour[:channels], int(rng.integers(1, 20)))
    return image, ext


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(images())
def test_any_valid_image_decodes_to_its_pixels_and_preprocesses(case):
    image, ext = case
    encoded = encode(image, ext)
    rgba = imaging.decode_image(encoded)
    height, width = image.shape[:2]
    assert rgba.shape == (height, width, 4) and rgba.dtype == np.uint8
    if ext != '.jpg':  # lossless: exactly the pixels, 16 bits cut to their top 8
        pixels = (image >> 8).astype(np.uint8) if image.dtype == np.uint16 else image
        if pixels.ndim == 2:
            expected = cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGBA)
        else:
            expected = cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA if pixels.shape[2] == 4
                                    else cv2.COLOR_BGR2RGBA)
        if ext == '.webp':  # lossless WebP keeps no colour under full transparency
            expected[expected[..., 3] == 0] = rgba[expected[..., 3] == 0]
        np.testing.assert_array_equal(rgba, expected)
    x = check_mnist(rgba)
    flat = (rgba == rgba[0, 0]).all()
    assert x is None or not flat, 'a one-colour image has no digit'
    if x is not None:  # prepare's shortcut (no RGBA copy) gives exactly the same
        np.testing.assert_array_equal(imaging.prepare(encoded), x)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(images(max_side=48), st.data())
def test_damaged_images_are_an_image_error_or_an_image(case, data):
    image, ext = case
    encoded = bytearray(encode(image, ext))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(encoded) - 1))
        encoded[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(encoded)))
    rgba = decoded_or_image_error(bytes(encoded[:cut]))
    if rgba is not None:
        check_mnist(rgba)


def jpeg_parts(jpeg):
    """A JPEG from OpenCV cut into what precedes its frame header (after SOI), the frame
    header (SOF), the tables between it and the first scan, and the scans to EOI."""
    sof = next(jpeg.index(m) for m in (b'\xff\xc0', b'\xff\xc2') if m in jpeg)
    end = sof + 2 + struct.unpack('>H', jpeg[sof + 2:sof + 4])[0]
    sos = jpeg.index(b'\xff\xda')
    return jpeg[2:sof], jpeg[sof:end], jpeg[end:sos], jpeg[sos:]


def sof(code, width, height):
    return (bytes([0xFF, code]) + struct.pack('>HBHHB', 11, 8, height, width, 1) +
            b'\x01\x11\x00')


def segment(code, payload, length):
    return bytes([0xFF, code]) + struct.pack('>H', len(payload) + 2 if length is None
                                             else length) + payload


# What a hostile JPEG slips around its frame header: fill bytes, FF 00 (no marker), junk,
# FF 00 and a "length" (skips the real frame header for a walk that reads one), fake frame
# headers of small or huge sizes, any marker segment (with a true or false length), and
# copies of a scan's header.
SIZES = st.one_of(st.tuples(st.integers(1, 40), st.integers(1, 40)),
                  st.sampled_from([(65535, 65535), (4097, 4096), (0, 16)]))


def jpeg_junk(scan):
    benign = st.one_of(  # what libjpeg skips or reads without complaint
        st.integers(1, 5).map(lambda n: b'\xff' * n),
        st.integers(1, 3).map(lambda n: b'\xff\x00' * n),
        st.builds(segment, st.sampled_from([0xE0, 0xE1, 0xEE, 0xFE]), st.binary(max_size=12),
                  st.none()))
    hostile = st.one_of(
        st.binary(min_size=1, max_size=8),
        st.integers(0, 400).map(lambda n: b'\xff\x00' + struct.pack('>H', n)),
        st.builds(lambda code, size: sof(code, *size), st.sampled_from([0xC0, 0xC1, 0xC2]), SIZES),
        st.builds(segment, st.integers(1, 0xFE), st.binary(max_size=12),
                  st.one_of(st.none(), st.integers(0, 20))),
        st.just(scan[:scan.index(b'\xff', 2)]), st.just(scan))
    return st.one_of(benign, benign, hostile)


@st.composite
def hostile_jpegs(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    shape = (draw(st.integers(1, 24)), draw(st.integers(1, 24)), draw(st.sampled_from([1, 3])))
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if draw(st.booleans()) else []
    ok, jpeg = cv2.imencode('.jpg', rng.integers(0, 256, shape, dtype=np.uint8), params)
    parts = jpeg_parts(jpeg.tobytes())
    chunks = []
    for part in parts:
        chunks += draw(st.lists(jpeg_junk(parts[-1]), max_size=2)) + [part]
    chunks += draw(st.lists(jpeg_junk(parts[-1]), max_size=2))
    skips = [(i, draw(st.integers(i, len(chunks))))
             for i in draw(st.lists(st.integers(0, len(chunks) - 1), max_size=2))]
    if draw(st.booleans()):  # a frame header after the end, where no decoder looks...
        chunks.append(sof(draw(st.sampled_from([0xC0, 0xC2])), *draw(SIZES)))
        # ... and a jump to it from before the real one
        skips.append((draw(st.integers(0, chunks.index(parts[1]))), len(chunks) - 1))
    # FF 00 and a length that jumps exactly over chunks i to j - 1 (onto chunk j), for a walk
    # that takes FF 00 for a marker
    skips.sort(reverse=True)
    while skips:
        i, j = skips.pop(0)
        chunks.insert(i, b'\xff\x00' + struct.pack('>H', 2 + len(b''.join(chunks[i:j]))))
        skips = [(a, b + (b >= i)) for a, b in skips]  # each a <= i: only targets move
    return b'\xff\xd8' + b''.join(chunks)


@FUZZ
@given(hostile_jpegs())
def test_hostile_jpegs_decode_at_the_checked_size_or_are_an_image_error(data):
    try:
        _, width, height = imaging.image_size(data)
    except imaging.ImageError:
        width = height = None
    rgba = decoded_or_image_error(data)
    if rgba is not None:
        assert rgba.shape[:2] == (height, width)
    if width is not None and width * height <= imaging.MAX_PIXELS:
        # OpenCV itself, without imaging's walls, decodes the size the check saw (or fails)
        try:
            pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error as e:
            assert 'CV_IO_MAX_IMAGE' not in str(e), 'OpenCV read a larger frame header'
        else:
            assert pixels is None or pixels.shape[:2] == (height, width)


# PNG chunk lists (issue #20): chunks of every type, known, unknown, critical or not,
# compressed or not (inflating to a megabyte), with true or false lengths and CRCs, before,
# between and after the image data and after IEND. The same invariant as the JPEGs', and the
# decoder sees only the chunks that make the pixels: the ancillary ones never change them.
PNG_TYPES = [b'tEXt', b'zTXt', b'iTXt', b'iCCP', b'eXIf', b'sPLT', b'gAMA', b'sBIT', b'pHYs',
             b'tIME', b'bKGD', b'acTL', b'fcTL', b'fdAT', b'prVt', b'tRNS', b'PLTE', b'IHDR',
             b'IDAT', b'IEND', b'QQQQ', b'a1b2']
PIXEL_CHUNKS = {b'IHDR', b'PLTE', b'tRNS', b'IDAT', b'IEND'}
INFLATING = zlib.compress(bytes(2 ** 20), 9)  # 1 KB inflating to 1 MiB


def raw_chunk(kind, data, length, crc):
    """(a chunk, whether it is a well-formed ancillary chunk that carries no pixels)."""
    whole = (struct.pack('>I', len(data) if length is None else length) + kind + data +
             struct.pack('>I', zlib.crc32(kind + data) if crc is None else crc))
    return whole, (kind.isalpha() and kind[0] & 0x20 and kind != b'tRNS' and
                   length in (None, len(data)) and crc in (None, zlib.crc32(kind + data)))


PNG_JUNK = st.builds(
    raw_chunk, st.sampled_from(PNG_TYPES),
    st.one_of(st.binary(max_size=16), st.just(INFLATING), st.just(b'Comment\0\0' + INFLATING),
              st.just(b'Comment\0\1\0\0\0' + INFLATING), st.just(b'icc\0\0' + INFLATING)),
    st.one_of(st.none(), st.none(), st.none(), st.integers(0, 40), st.integers(0, 2 ** 32 - 1)),
    st.one_of(st.none(), st.none(), st.none(), st.integers(0, 2 ** 32 - 1)))


@st.composite
def hostile_pngs(draw):
    """(a hostile PNG, the PNG OpenCV wrote, whether only harmless chunks were added)."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    shape = (draw(st.integers(1, 24)), draw(st.integers(1, 24)), draw(st.sampled_from([1, 3, 4])))
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    if draw(st.booleans()):
        image = image.astype(np.uint16) * 257
    plain = encode(image, '.png')
    idat, harmless = plain[41:-16], True  # OpenCV writes IHDR, one IDAT and IEND
    if draw(st.integers(0, 9)) == 0:  # the rows, then more that inflates past them
        idat = zlib.compress(zlib.decompress(idat) + bytes(draw(st.integers(1, 2 ** 20))))
        harmless = False
    cuts = sorted(draw(st.lists(st.integers(0, len(idat)), max_size=2)))
    pieces = [idat[a:b] for a, b in zip([0, *cuts], [*cuts, len(idat)])]
    chunks = [plain[8:33]]
    for piece in pieces + [None]:
        for junk, ok in draw(st.lists(PNG_JUNK, max_size=2)):
            chunks.append(junk)
            harmless = harmless and ok
        chunks.append(png_chunk(b'IEND', b'') if piece is None else png_chunk(b'IDAT', piece))
    after = b''.join(junk for junk, _ in draw(st.lists(PNG_JUNK, max_size=2)))
    return b'\x89PNG\r\n\x1a\n' + b''.join(chunks) + after, plain, harmless


def chunk_types(png):
    """The types of a well-formed PNG's chunks, and the bytes after IEND."""
    i, types = 8, []
    while i < len(png) and (not types or types[-1] != b'IEND'):
        length, kind = struct.unpack('>I4s', png[i:i + 8])
        types.append(kind)
        i += 12 + length
    return types, png[i:]


@FUZZ
@given(hostile_pngs())
def test_hostile_png_chunk_lists_decode_to_their_pixels_or_are_an_image_error(case):
    data, plain, harmless = case
    _, width, height = imaging.image_size(data)
    with mock.patch.object(cv2, 'imdecode', wraps=cv2.imdecode) as decoder:
        rgba = decoded_or_image_error(data)
    if rgba is not None:
        assert rgba.shape[:2] == (height, width)
    for call in decoder.call_args_list:  # only the pixels' chunks, nothing after IEND
        types, after = chunk_types(bytes(call.args[0]))
        assert set(types) <= PIXEL_CHUNKS and types[-1] == b'IEND' and not after, types
    if harmless:  # chunks that carry no pixels, anywhere: the same pixels
        np.testing.assert_array_equal(rgba, imaging.decode_image(plain))


SIDES = st.one_of(st.integers(0, 9), st.sampled_from([4096, 65535, 65536, 2 ** 20 + 1,
                                                       2_000_000, 2 ** 31 - 1, 2 ** 31]))


@FUZZ
@given(st.sampled_from(['PNG', 'BMP', 'BMP top-down', 'WebP']), SIDES, SIDES,
       st.binary(max_size=64))
def test_any_announced_size_is_an_image_error_or_that_image(kind, width, height, pixels):
    # Headers announcing any size (zero, over OpenCV's caps, over 2**31) over a few bytes
    # of pixels: never another exception (a cv2.error was a 500), never another size.
    if kind == 'PNG':
        data = png_header(width, height)[:33] + png_chunk(b'IDAT', pixels)
    elif kind.startswith('BMP'):
        data = bmp_header(width % 2 ** 31, -(height % 2 ** 31) if 'top' in kind else
                          height % 2 ** 31) + pixels
    else:  # lossless WebP: sides of 1 to 16384
        bits = (width - 1) % 2 ** 14 | ((height - 1) % 2 ** 14) << 14
        body = b'VP8L' + struct.pack('<I', 5 + len(pixels)) + b'\x2f' + struct.pack('<I', bits)
        data = b'RIFF' + struct.pack('<I', 4 + len(body) + len(pixels)) + b'WEBP' + body + pixels
    _, announced_width, announced_height = imaging.image_size(data)
    rgba = decoded_or_image_error(data)
    if rgba is not None:
        assert rgba.shape[:2] == (announced_height, announced_width)


# ---------------------------------------------------------------------------------------
# The API, fuzzed from its own OpenAPI document. Checks: no 5xx, statuses, content types and
# bodies as documented, and schema-invalid requests rejected. (Not "schema-valid requests
# are accepted": any string is a schema-valid image, and most random ones are not images.)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]


@pytest.fixture(scope='module')
def fuzzed(data_file, tmp_path_factory):
    """A real server on a tiny training set (300 samples, at most 2 epochs per /train)."""
    folder = tmp_path_factory.mktemp('fuzz')
    write_models(folder / 'models', {1: (784, 20, 10), 2: (784, 30, 10)}, best=2)
    with np.load(data_file, allow_pickle=False) as f:
        np.savez(folder / 'tiny.npz', **{k: f[k][:300] if f[k].ndim else f[k] for k in f.files})
    with Server(models_dir=folder / 'models', state_dir=folder / 'state',
                data_path=folder / 'tiny.npz', max_epochs=2) as s:
        yield s


def live_state(s):
    """The live net in memory and on disk (digests)."""
    ctx = s.app.ctx
    saved = (s.state / 'live.npz').read_bytes()
    live = ctx.nets.live
    return weights_digest(live.graph), live.meta, hashlib.sha256(saved).hexdigest()


# The document of the fuzzed server (checked below to be the one it serves), built at import
# because schemathesis's fixture-based loader does not run under pytest 9: from the routes of
# an app with its settings (an app's routes do not depend on its folders).
DOCUMENT = openapi_document(Settings(max_epochs=2), [1, 2],
                            create_app(max_epochs=2, name='fuzz_document').router.routes)
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_the_fuzzed_document_is_the_served_one(fuzzed):
    assert fuzzed.get('/openapi.json').json == json.loads(json.dumps(DOCUMENT))


@schema.exclude(path='/train/events').parametrize()  # a stream that never ends
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_answers_as_documented(case, fuzzed):
    before = live_state(fuzzed)
    response = case.call(base_url=f'http://127.0.0.1:{fuzzed.port}', timeout=60)
    case.validate_response(response, checks=CHECKS)
    if response.status_code >= 400:
        assert live_state(fuzzed) == before, 'a rejected request changed the live net'
