"""Turn any drawn or photographed digit into the 784 inputs of an MNIST network.

MNIST itself was made this way: each digit was scaled so that its longest side is 20 px
(keeping the aspect ratio, anti-aliased into grey levels) and pasted into a 28x28 field so
that its centre of mass sits at the centre, (14, 14), white ink on black. ``to_mnist`` does
the same to any image, so an MNIST image comes out unchanged:

    rgba = decode_image('data:image/png;base64,iVBOR...')   # (H, W, 4) uint8
    x = to_mnist(rgba)                                       # (28, 28) float32 in [0, 1]
    x = prepare('data:image/png;base64,iVBOR...')            # both steps

Only PNG, JPEG, WebP and BMP are accepted. A hostile file meets three walls before and after
OpenCV decodes it:

1. its size is read from the header the way the decoder reads it (for JPEG, markers are
   walked as libjpeg walks them) and refused over MAX_PIXELS or MAX_SIDE before any pixel
   is decoded; JPEGs with more than MAX_JPEG_SCANS scans are refused too (each scan is a
   pass over the whole image); a PNG's chunk list is walked to IEND and only the chunks
   that make its pixels (IHDR, PLTE, tRNS, IDAT, IEND) reach the decoder: compressed text
   and profiles (zTXt, iTXt, iCCP) inflate to megabytes each, and libpng inflates whatever
   follows the announced rows in IDAT, so a PNG with over MAX_PNG_CHUNKS chunks, over
   MAX_PNG_EXTRA_BYTES of other chunks, or image data inflating past its announced size,
   is refused (strip_metadata returns the bytes the decoder sees);
2. OpenCV's own pixel limit, OPENCV_IO_MAX_IMAGE_PIXELS, is set to MAX_PIXELS (OpenCV reads
   it when cv2 is imported, so import imaging before cv2);
3. the decoded image must have the size the header announced.

Whatever the bytes, decoding raises ImageError (or a subclass) and nothing else.
``cheap_to_decode`` says which images cost so little that a server may decode them inline.
Not bounded here: the bytes themselves (the server caps the body; PNG, WebP and BMP decode
in time linear in bytes plus pixels; an animated WebP decodes only its first frame, an
animated PNG its default image), and the warnings libpng and libjpeg print on stderr.
"""
import binascii
import logging
import os
import re
import struct
import sys
import zlib

MAX_PIXELS = 4096 * 4096  # width * height; a 16-megapixel photo still fits

log = logging.getLogger(__name__)
if 'cv2' in sys.modules:
    log.warning('cv2 was imported before imaging: OpenCV keeps its own pixel limit, not '
                'MAX_PIXELS (import imaging first)')
os.environ.setdefault('OPENCV_IO_MAX_IMAGE_PIXELS', str(MAX_PIXELS))

import cv2  # noqa: E402 (after its limit is set)
import numpy as np  # noqa: E402

MAX_SIDE = 65535  # the most a JPEG can announce; OpenCV refuses sides over 2**20
MAX_JPEG_SCANS = 200  # real progressive JPEGs have about 10
MAX_JPEG_SEGMENTS = 1000  # segments read while looking for a JPEG's size
MAX_JPEG_GAPS = 64 * 1024  # bytes of fill and junk between a JPEG's header segments, in all
MAX_PNG_CHUNKS = 10_000  # chunks walked up to IEND; real files have a few per megabyte
MAX_PNG_EXTRA_BYTES = 64 * 1024  # chunks other than image data (IDAT), headers included
CHEAP_PIXELS = 160 * 160  # see cheap_to_decode
CHEAP_KINDS = frozenset({'PNG', 'JPEG', 'WebP', 'BMP'})
MNIST_SIZE = 28
DIGIT_SIZE = 20  # longest side of the digit inside the 28x28 field
INK_THRESHOLD = 0.1  # ink at or below this (0..1) is background noise (JPEG artefacts, paper)
_BAND = 256  # rows converted at a time: (256, W) temporaries instead of (H, W) ones
_DATA_URL = re.compile(r'data:[^,]*?;base64,', re.IGNORECASE)
MAX_DATA_URL_HEAD = 1024  # characters of a data URL before its base64 data ("data:...,")
BASE64_CHUNK = 2 ** 20  # characters of base64 read by one C call (a multiple of 4)
_BASE64 = b'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
_URL_SAFE = bytes.maketrans(b'-_', b'+/')
_WHITESPACE = b' \t\n\r\x0b\x0c'  # what str.split() and re's \s take in ASCII
# libjpeg's next_marker: skip bytes up to an 0xFF, then any 0xFF fill bytes; FF 00 is no
# marker (stuffed data) and is skipped too. Possessive, so a long run costs linear time.
_JPEG_NEXT_MARKER = re.compile(rb'(?:[^\xff]|\xff+\x00)*+\xff+([^\x00\xff])')
_JPEG_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCA, 0xCB})  # SOFn libjpeg decodes
# DHT, DAC, DNL, DQT, DRI, APPn, COM: segments with a length, read or skipped by libjpeg
_JPEG_SEGMENTS = frozenset({0xC4, 0xCC, 0xDB, 0xDC, 0xDD, 0xFE, *range(0xE0, 0xF0)})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_PNG_CHUNK = struct.Struct('>I4s')  # length, type
# width, height, depth, colour type, compression, filter, interlace
_PNG_IHDR = struct.Struct('>IIBBBBB')
_PNG_PIXELS = frozenset({b'IHDR', b'PLTE', b'tRNS', b'IDAT', b'IEND'})  # all a decoder needs
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # interlace passes: first column, first row, column step, row step
_INFLATE_STEP = 64 * 1024  # compressed bytes given to zlib at a time (and 16x that out)
_INDEX = np.arange(DIGIT_SIZE, dtype=np.float32)  # row or column numbers in the digit
_INDEX.flags.writeable = False


class ImageError(ValueError):
    """The data is not a usable image; the message says what is wrong."""


class ImageTooLarge(ImageError):
    """The image announces more than MAX_PIXELS pixels or a side over MAX_SIDE."""


class NoDigitError(ImageError):
    """The image is blank: nothing stands out from the background."""


# ---------------------------------------------------------------------------------------
# Decoding: base64 -> bytes -> header check -> RGBA pixels.

def decode_base64(text):
    """Bytes of a base64 string (standard or URL-safe, padding optional, whitespace anywhere,
    data: URL allowed). Read BASE64_CHUNK characters at a time: each C call holds the GIL
    for a bounded time, whatever the string's length."""
    text = text.strip()
    if text[:5].lower() == 'data:':
        prefix = _DATA_URL.match(text, 0, MAX_DATA_URL_HEAD)  # one C call: not over 16 MiB
        if prefix is None:
            raise ImageError('a data URL must look like "data:image/png;base64,<base64 data>", '
                             f'got {text[:40]!r}...')
        text = text[prefix.end():]
    chunks = range(0, len(text), BASE64_CHUNK)
    try:  # what browsers send: standard, padded, one line ("=" only at the very end)
        if text.find('=', 0, len(text) - 2) == -1:
            data = b''.join(binascii.a2b_base64(text[i:i + BASE64_CHUNK], strict_mode=True)
                            for i in chunks)
            if data:
                return data
    except (binascii.Error, ValueError):  # ValueError: text that is not ASCII
        pass
    pieces = []
    for i in chunks:
        piece = text[i:i + BASE64_CHUNK]
        try:
            piece = piece.encode('ascii')
        except UnicodeEncodeError as e:
            raise ImageError(f'invalid base64: unexpected character {piece[e.start]!r} at '
                             f'position {i + e.start}.') from None
        pieces.append(piece.translate(_URL_SAFE, _WHITESPACE))
    text = b''.join(pieces).rstrip(b'=')
    if not text:
        raise ImageError('the image is empty: expected base64-encoded PNG, JPEG, WebP or BMP data.')
    for i in range(0, len(text), BASE64_CHUNK):
        piece = text[i:i + BASE64_CHUNK]
        if bad := piece.translate(None, _BASE64):
            raise ImageError(f'invalid base64: unexpected character {chr(bad[0])!r} at '
                             f'position {i + piece.index(bad[0])}.')
    if len(text) % 4 == 1:
        raise ImageError(f'invalid base64: {len(text)} characters cannot encode whole bytes.')
    text += b'=' * (-len(text) % 4)
    return b''.join(binascii.a2b_base64(text[i:i + BASE64_CHUNK])
                    for i in range(0, len(text), BASE64_CHUNK))


def image_size(data):
    """(format, width, height) read from the header of PNG, JPEG, WebP or BMP bytes, as the
    decoder will read it. Raises ImageError for a header the decoder would refuse, and for
    a JPEG with more than MAX_JPEG_SCANS scans."""
    if data.startswith(b'\x89PNG\r\n\x1a\n'):
        if len(data) < 24 or data[12:16] != b'IHDR':
            raise ImageError('broken PNG: no complete IHDR header with the image size.')
        return ('PNG',) + struct.unpack('>II', data[16:24])
    if data.startswith(b'\xff\xd8\xff'):  # SOI and a marker: what OpenCV takes for a JPEG
        return ('JPEG',) + _jpeg_size(data)
    if data.startswith(b'RIFF') and data[8:12] == b'WEBP':
        return ('WebP',) + _webp_size(data)
    if data.startswith(b'BM') and len(data) >= 26:
        if struct.unpack('<I', data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
            return ('BMP',) + struct.unpack('<HH', data[18:22])
        width, height = struct.unpack('<ii', data[18:26])
        return 'BMP', abs(width), abs(height)  # a negative height means top-down rows
    raise ImageError(f'not a PNG, JPEG, WebP or BMP image (starts with {data[:8]!r}).')


def cheap_to_decode(kind, width, height):
    """Whether an image image_size accepted costs so little to decode that a server may do
    it on its event loop: a known format of at most CHEAP_PIXELS pixels.

    Decoding costs a pass over the pixels per JPEG scan, which image_size bounds by
    MAX_JPEG_SCANS, one pass for PNG (interlaced or not), BMP and WebP (the first frame of
    an animation only), plus time linear in the file's bytes, which the caller bounds."""
    return kind in CHEAP_KINDS and width * height <= CHEAP_PIXELS


def _jpeg_size(data):
    # The frame header (SOF) libjpeg uses is the one it meets first, walking marker to marker
    # from SOI to the first scan (SOS); walk the same way, so that no bytes placed before it
    # (a fake SOF behind an FF 00 "length", fill bytes, junk) make the two disagree. Headers
    # libjpeg would refuse are refused here with a clearer message.
    scans = data.count(b'\xff\xda')  # SOS; entropy-coded data never holds FF DA (it is
    if scans > MAX_JPEG_SCANS:       # stuffed as FF 00), so this counts at least the scans
        raise ImageError(f'the JPEG has {scans} scans; at most {MAX_JPEG_SCANS} are accepted '
                         '(each scan costs a pass over the whole image).')
    # The gaps between segments (libjpeg skips them with a warning) are walked by a regular
    # expression, one C call at some 35 ns a byte: bounded in all, a JPEG of 12 MB of junk
    # before its frame header no longer holds the GIL (and the event loop) for 0.4 s.
    i, size, gaps = 2, None, 0
    for _ in range(MAX_JPEG_SEGMENTS):
        end = min(len(data), i + 2 + MAX_JPEG_GAPS - gaps)
        marker = _JPEG_NEXT_MARKER.match(data, i, end)
        if marker is None:
            if end < len(data):
                raise ImageError(f'broken JPEG: more than {MAX_JPEG_GAPS} bytes of fill or junk '
                                 'between its header segments (real JPEGs have none).')
            raise ImageError(f'broken JPEG: no marker after byte {i} (no scan follows).')
        gaps += marker.end() - i - 2
        code, i = marker.group(1)[0], marker.end()
        if code == 0xDA:
            if size is None:
                raise ImageError('broken JPEG: a scan before its frame header.')
            return size
        if code == 0xD9:
            raise ImageError('broken JPEG: the image ends before its first scan.')
        if code in _JPEG_STANDALONE:
            continue
        if code not in _JPEG_FRAMES and code not in _JPEG_SEGMENTS:
            raise ImageError(f'unsupported JPEG marker 0x{code:02X} at byte {i - 2}.')
        length = struct.unpack('>H', data[i:i + 2])[0] if i + 2 <= len(data) else 0
        if length < 2 or i + length > len(data):
            raise ImageError(f'broken JPEG: segment length {length} of marker 0x{code:02X} at '
                             f'byte {i - 2} is too short or runs past the end.')
        if code in _JPEG_FRAMES:
            if size is not None:
                raise ImageError(f'broken JPEG: a second frame header at byte {i - 2}.')
            if length < 8:
                raise ImageError(f'broken JPEG: frame header of {length} bytes at byte {i - 2}.')
            height, width = struct.unpack('>HH', data[i + 3:i + 7])
            size = width, height
        i += length
    raise ImageError(f'broken JPEG: more than {MAX_JPEG_SEGMENTS} segments before the first '
                     'scan.')


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


def strip_metadata(data):
    """The image's bytes with only what its decoder needs to make the pixels. For PNG: the
    chunks IHDR, PLTE, tRNS, IDAT and IEND, after checking the chunk list (see
    decode_image); text, colour profiles, EXIF, animation frames and any other chunk, and
    bytes after IEND, are left out. Other formats are returned unchanged."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f'data must be bytes, got {type(data).__name__}.')
    data = bytes(data)
    if not data.startswith(_PNG_SIGNATURE):
        return data
    return _PNG_SIGNATURE + b''.join(_png_chunks(data)[0])


def _png_chunks(data):
    """(the chunks that make a PNG's pixels, whole, as memoryviews; the IDAT payloads; the
    IHDR fields), walking the chunk list from the signature to IEND. Raises ImageError for
    a list a decoder would refuse or that holds more than MAX_PNG_CHUNKS chunks or
    MAX_PNG_EXTRA_BYTES bytes of chunks other than IDAT (whose decompression, e.g. of
    zTXt, iTXt and iCCP, costs far more than their size)."""
    view = memoryview(data)
    i, extra, kept, idat, header = len(_PNG_SIGNATURE), 0, [], [], None
    for _ in range(MAX_PNG_CHUNKS):
        if i + 12 > len(data):
            raise ImageError(f'broken PNG: the file ends at byte {len(data)}, inside the chunk '
                             f'starting at byte {i}; expected chunks up to IEND (the file is '
                             'truncated).')
        length, kind = _PNG_CHUNK.unpack_from(data, i)
        name, end = kind.decode('latin-1'), i + 12 + length
        if not kind.isalpha():
            raise ImageError(f'broken PNG: invalid chunk type {kind!r} at byte {i}; a chunk '
                             'type is four ASCII letters.')
        if length > 2 ** 31 - 1 or end > len(data):
            raise ImageError(f'broken PNG: chunk {name} at byte {i} declares {length} bytes of '
                             f'data, but {max(len(data) - i - 12, 0)} bytes follow its header (the '
                             'file is truncated, or the length is wrong).')
        if header is None and (kind != b'IHDR' or length != 13):
            raise ImageError(f'broken PNG: the first chunk must be a 13-byte IHDR, got a '
                             f'{length}-byte {name}.')
        if kind != b'IDAT':
            extra += end - i
            if extra > MAX_PNG_EXTRA_BYTES:
                raise ImageError(f'the PNG holds more than {MAX_PNG_EXTRA_BYTES} bytes of chunks '
                                 f'other than image data (IDAT), reaching chunk {name} at byte '
                                 f'{i}; save the image without metadata (text, colour '
                                 'profile, EXIF).')
        if kind in _PNG_PIXELS:
            if zlib.crc32(view[i + 4:end - 4]) != int.from_bytes(view[end - 4:end], 'big'):
                raise ImageError(f'broken PNG: chunk {name} at byte {i} fails its CRC check '
                                 '(the file is corrupt).')
            if kind == b'IHDR':
                if header is not None:
                    raise ImageError(f'broken PNG: a second IHDR at byte {i}.')
                header = _png_header(data[i + 8:end - 4])
            elif kind == b'PLTE' and (idat or any(c[4:8] == b'PLTE' for c in kept)):
                raise ImageError(f'broken PNG: a PLTE chunk at byte {i} after the palette or '
                                 'the image data; expected one PLTE before IDAT.')
            elif kind == b'IEND':
                if not idat:
                    raise ImageError('broken PNG: IEND before any image data (IDAT).')
                return kept + [view[i:end]], idat, header
            if kind == b'IDAT':
                idat.append(view[i + 8:end - 4])
            if kind != b'tRNS' or not idat and all(c[4:8] != b'tRNS' for c in kept):
                kept.append(view[i:end])  # a late or second tRNS is ignored, as libpng does
        elif not kind[0] & 0x20:  # an uppercase first letter: critical, the decoder refuses it
            raise ImageError(f'unsupported PNG: unknown critical chunk {name} at byte {i}.')
        i = end
    raise ImageError(f'the PNG has more than {MAX_PNG_CHUNKS} chunks before IEND; real images '
                     'have a few per megabyte.')


def _png_header(ihdr):
    """(width, height, depth, colour type, interlace) of IHDR data that libpng accepts."""
    width, height, depth, colour, compression, filtering, interlace = _PNG_IHDR.unpack(ihdr)
    if depth not in _PNG_DEPTHS.get(colour, ()):
        raise ImageError(f'broken PNG: bit depth {depth} with colour type {colour}; expected '
                         'colour type 0 (grey), 2 (RGB), 3 (palette), 4 (grey and alpha) or '
                         '6 (RGBA) with a depth the PNG specification allows for it.')
    if compression or filtering or interlace > 1:
        raise ImageError(f'broken PNG: compression {compression}, filter {filtering}, interlace '
                         f'{interlace}; expected 0, 0 and 0 or 1.')
    return width, height, depth, colour, interlace


def _png_data_size(width, height, depth, colour, interlace):
    """Bytes of filtered rows the IDAT stream holds for this header: a filter byte per row of
    each pass (one pass, or Adam7's seven when interlaced)."""
    bits = depth * _PNG_CHANNELS[colour]
    size = 0
    for column, row, column_step, row_step in _ADAM7 if interlace else ((0, 0, 1, 1),):
        columns = (width - column + column_step - 1) // column_step
        rows = (height - row + row_step - 1) // row_step
        if columns > 0 and rows > 0:
            size += rows * (1 + (columns * bits + 7) // 8)
    return size


def _check_png_data(idat, header):
    # libpng inflates the whole IDAT stream, the rows the header announces and whatever
    # follows them: inflate it here first, stopping as soon as it holds more than those rows.
    expected = _png_data_size(*header)
    inflater, produced = zlib.decompressobj(), 0
    try:
        for payload in idat:
            for start in range(0, len(payload), _INFLATE_STEP):
                tail = payload[start:start + _INFLATE_STEP]
                while tail and not inflater.eof:
                    produced += len(inflater.decompress(tail, 16 * _INFLATE_STEP))
                    if produced > expected:
                        raise ImageError(
                            f'broken PNG: the image data inflates to more than the {expected} '
                            f'bytes a {header[0]}x{header[1]} image of this type holds.')
                    tail = inflater.unconsumed_tail
                if inflater.eof:
                    return
    except zlib.error as e:
        raise ImageError(f'broken PNG: the image data (IDAT) is not a valid zlib stream ({e}).'
                         ) from None


def decode_image(data):
    """RGBA uint8 pixels (H, W, 4) of base64 text (str) or encoded image bytes.

    Raises ImageError (ImageTooLarge over MAX_PIXELS or MAX_SIDE) with a message saying what
    is wrong, and nothing else whatever the data.
    """
    pixels = _decode(data)
    height, width = pixels.shape[:2]
    code = {1: cv2.COLOR_GRAY2RGBA, 3: cv2.COLOR_BGR2RGBA, 4: cv2.COLOR_BGRA2RGBA}[
        _channels(pixels)]
    rgba = np.empty((height, width, 4), np.uint8)
    for top in range(0, height, _BAND):  # no full-size 8-bit copy of a 16-bit image
        rgba[top:top + _BAND] = cv2.cvtColor(_8_bits(pixels[top:top + _BAND]), code)
    return rgba


def _decode(data):
    """Pixels as OpenCV decodes them, uint8 or uint16 (16-bit PNG): grey (H, W) or (H, W, 1),
    BGR (H, W, 3) or BGRA (H, W, 4), of the size the header announced."""
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
    if max(width, height) > MAX_SIDE:
        raise ImageTooLarge(f'the {kind} image is {width}x{height}; a side may be at most '
                            f'{MAX_SIDE} pixels.')
    if kind == 'PNG':  # the decoder sees the pixels' chunks only, their data bounded
        kept, idat, header = _png_chunks(data)
        _check_png_data(idat, header)
        data = _PNG_SIGNATURE + b''.join(kept)
    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # its own limits (the second wall), or a decoder's refusal
        why = ' '.join(str(getattr(e, 'err', '')).replace('>', ' ').split()) or 'an error'
        if 'CV_IO_MAX_IMAGE' in why:
            raise ImageTooLarge(f'the {kind} image is larger than its header announced '
                                f'({width}x{height}): the decoder refused it ({why}).') from None
        raise ImageError(f'the {kind} image ({width}x{height}) could not be decoded ({why}).'
                         ) from None
    if pixels is None:
        raise ImageError(f'the {kind} image ({width}x{height}) could not be decoded: '
                         'the file is truncated or corrupt.')
    if pixels.shape[:2] != (height, width):
        raise ImageError(f'broken {kind}: the header announces {width}x{height} but the image '
                         f'decodes to {pixels.shape[1]}x{pixels.shape[0]}.')
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ImageError(f'unsupported {kind} pixel type {pixels.dtype}: expected 8 or 16 bits.')
    if _channels(pixels) not in (1, 3, 4):
        raise ImageError(f'unsupported {kind} image with {_channels(pixels)} channels.')
    return pixels


def _channels(pixels):
    return 1 if pixels.ndim == 2 else pixels.shape[2]


def _8_bits(pixels):
    # the top 8 bits of 16-bit pixels (what a 16-bit PNG means in 8 bits), as (rows, W, 1..4)
    return pixels if pixels.dtype == np.uint8 else (pixels >> 8).astype(np.uint8)


def _grey_and_alpha(pixels):
    """uint8 grey levels (H, W) and alpha (H, W) or None of decoded pixels, converted a band
    of rows at a time (no full-size temporaries)."""
    height, width = pixels.shape[:2]
    channels = _channels(pixels)
    if channels == 1 and pixels.dtype == np.uint8:
        return pixels.reshape(height, width), None
    grey = np.empty((height, width), np.uint8)
    alpha = np.empty((height, width), np.uint8) if channels == 4 else None
    for top in range(0, height, _BAND):
        band, rows = _8_bits(pixels[top:top + _BAND]), slice(top, top + _BAND)
        if channels == 1:
            grey[rows] = band.reshape(-1, width)
        else:
            grey[rows] = cv2.cvtColor(band, cv2.COLOR_BGR2GRAY if channels == 3 else
                                      cv2.COLOR_BGRA2GRAY)
        if alpha is not None:
            alpha[rows] = band[..., 3]
    return grey, alpha


# ---------------------------------------------------------------------------------------
# Preprocessing: pixels -> a 28x28 MNIST-like digit.

def ink(gray, alpha=None):
    """Ink strength (H, W) float32, 0 = background, 255 = the most a pixel can differ from it,
    and the strongest ink of each row (H,), whatever the colours, from grey levels and alpha
    (uint8 (H, W); None when opaque). Temporaries are a fraction of the float32 result.

    Transparency is composited away first. On a mostly transparent canvas the opaque pixels
    are the ink, so they go on a backdrop that contrasts with them (black or white ink both
    work); on a mostly opaque one the transparent pixels show the paper's colour. Then the
    background is the median of the border, and ink is how far a pixel is from it.
    Raises NoDigitError when no pixel is more than INK_THRESHOLD from the background.
    """
    levels = gray
    gray = gray.astype(np.float32)  # (H, W), made the ink strength in place
    if alpha is not None and alpha.min() < 255:
        opaque = (alpha > 127).view(np.uint8)  # alpha / 255 > 0.5
        count = cv2.countNonZero(opaque)
        # the median grey level of the opaque pixels, from their histogram (no copy of them)
        level = _median_level(cv2.calcHist([levels], [0], opaque, [256], [0, 256])) \
            if count else 0.0
        if count < opaque.size / 2:  # a transparent canvas: the opaque pixels are ink
            backdrop = 255.0 if level < 127.5 else 0.0
        else:  # an opaque picture: transparency shows its paper
            backdrop = level
        # gray * alpha + backdrop * (1 - alpha), in place, alpha in float a band at a time
        gray -= backdrop
        for top in range(0, len(gray), _BAND):
            gray[top:top + _BAND] *= np.divide(alpha[top:top + _BAND], 255, dtype=np.float32)
        gray += backdrop
    border = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    # |gray - background|, in place (cv2.absdiff would take a 4x1 image for a scalar)
    strength = np.abs(np.subtract(gray, _median(border), out=gray), out=gray)
    rows = strength.max(axis=1)
    if rows.max() <= INK_THRESHOLD * 255:
        raise NoDigitError('no digit found: the image is blank (nothing differs from the '
                           f'background by more than {INK_THRESHOLD:.0%}).')
    return strength, rows


def _median_level(histogram):
    # np.median of uint8 levels from their counts (float32 counts are exact up to 2**24,
    # which is MAX_PIXELS): the mean of the two middle values
    below = np.cumsum(histogram.ravel().astype(np.int64))
    n = int(below[-1])
    return (int(np.searchsorted(below, (n - 1) // 2, side='right')) +
            int(np.searchsorted(below, n // 2, side='right'))) / 2


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
    return _to_mnist(*_grey_and_alpha(_decode(data)))  # the decoded pixels freed on return


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

