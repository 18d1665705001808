"""preprocess.py: raw MNIST to data/mnist_preprocessed.npz, once, checked.

Reads the four canonical IDX ``.gz`` files or the classic ``mnist.pkl.gz`` from a source folder
(``data/raw/``, or ``$MNIST_DIR``), validates them (gzip, magic numbers, counts, 28x28, labels
0..9, the published checksums of the IDX files), splits the 70,000 images and writes one NPZ
that loads with ``allow_pickle=False``. Pixels stay uint8 on disk; ``load_dataset`` scales them.

    python preprocess.py                    # -> data/mnist_preprocessed.npz (70/20/10, seed 0;
                                            #    train only official-train, test only official-test)
    python preprocess.py --download         # first fetch the IDX files into data/raw/
    python preprocess.py --split official   # 50,000 / 10,000 of the training set, official test
    python preprocess.py --pickle           # also data/mnist_preprocessed.pkl, the original layout
    python preprocess.py --merge-samples samples.npz   # users' drawings (GET /samples/export)
                                            #    into the training split

    from preprocess import load_dataset
    data = load_dataset()                   # {'train': (X, y), 'val': (X, y), 'test': (X, y)}
    net.feed(data['train'], data['val'])

Re-running is a no-op while the output matches the sources and options (``--force`` rebuilds,
from MNIST alone: merged samples go).
Any problem ends with one message naming the file and what is wrong; outputs are written
atomically, so a failed run never leaves a partial file.
"""
import argparse
import codecs
import gzip
import hashlib
import io
import json
import logging
import math
import os
import pickle
import sys
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from http.client import HTTPException
from pathlib import Path

import numpy as np
from tqdm import tqdm

from better_tensorflow import atomic_write

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent
RAW_DIR = ROOT / 'data' / 'raw'                        # default source, unless $MNIST_DIR is set
DEFAULT_OUTPUT = ROOT / 'data' / 'mnist_preprocessed.npz'
MIRROR = 'https://ossci-datasets.s3.amazonaws.com/mnist/'  # torchvision's copy of the IDX files
SEED = 0
RATIOS = (0.7, 0.2, 0.1)      # train / validation / test share of all images (the original's)
OFFICIAL_VAL = 10_000         # --split official: the last 10,000 training images validate
SPLITS = ('train', 'val', 'test')
FORMAT_VERSION = 2            # of the output; a different version is rebuilt
                              # (2: the random split keeps the official sets apart)
DOWNLOAD_TIMEOUT = 60         # seconds without data before a download gives up
# Users' drawings (the server's sample store): every fifth by id is never trained on, so that
# what a net reads of them is measured on drawings it has not seen (service/samples.py, and
# --merge-samples here).
SAMPLE_VALIDATION_EVERY = 5

# The canonical files: bytes, md5 (as published, e.g. in torchvision) and sha256.
IDX_FILES = {
    'train-images-idx3-ubyte.gz': (9912422, 'f68b3c2dcbeaaa9fbdd348bbdeb94873',
                                   '440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609'),
    'train-labels-idx1-ubyte.gz': (28881, 'd53e105ee54ea40749a09fcbcd1e9432',
                                   '3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c'),
    't10k-images-idx3-ubyte.gz': (1648877, '9fb629c4189551a2d022fa330f9573f3',
                                  '8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6'),
    't10k-labels-idx1-ubyte.gz': (4542, 'ec29112dd5afa0611ce80d1b7f02629c',
                                  'f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6'),
}
IDX_SETS = (('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),   # 60,000, then
            ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'))     # 10,000 test
PICKLE_FILE = 'mnist.pkl.gz'  # (train 50,000, val 10,000, test 10,000), pixels uint8 / 256


class DataError(ValueError):
    """Raw data, download or output that cannot be used; the message names the file."""


def is_sample_validation(ids):
    """Which of the samples ``ids`` are held out from training (id % 5 == 0)."""
    return np.asarray(ids) % SAMPLE_VALIDATION_EVERY == 0


# ---------------------------------------------------------------------------------------
# Reading and validating the raw files.

def find_source(source):
    """``('idx' | 'pickle', [paths])`` for the raw MNIST in folder ``source``."""
    source = Path(source)
    idx = [source / name for name in IDX_FILES]
    missing = [p.name for p in idx if not p.exists()]
    if not missing:
        return 'idx', idx
    if (source / PICKLE_FILE).exists():
        return 'pickle', [source / PICKLE_FILE]
    found = len(missing) < len(idx)
    raise DataError(f'{source}: ' + (f'incomplete MNIST, missing {", ".join(missing)}' if found
                                     else f'no MNIST found (expected the four IDX files '
                                          f'{", ".join(IDX_FILES)} or {PICKLE_FILE})')
                    + '; `python preprocess.py --download` fetches the IDX files.')


def has_source(source):
    """Whether ``source`` holds any raw MNIST file (complete or not)."""
    return any((Path(source) / name).exists() for name in (*IDX_FILES, PICKLE_FILE))


def mnist_dirs():
    """Where raw MNIST is looked for, in this order (the one resolver of make run, make data,
    make models, bench/ and the tests): $MNIST_DIR when set and not empty, then data/raw/."""
    env = os.environ.get('MNIST_DIR', '').strip()
    return [Path(env), RAW_DIR] if env else [RAW_DIR]


def find_mnist():
    """The first folder of mnist_dirs() that holds raw MNIST, None when none does."""
    return next((d for d in mnist_dirs() if has_source(d)), None)


def check_published(name, data):
    """Raise DataError unless ``data`` is the canonical IDX file ``name``, byte for byte."""
    size, md5, sha256 = IDX_FILES[name]
    if len(data) != size:
        raise DataError(f'{name}: {len(data)} bytes, expected {size}: the file is truncated or '
                        'not the canonical one.')
    got = hashlib.md5(data).hexdigest()
    if got != md5 or hashlib.sha256(data).hexdigest() != sha256:
        raise DataError(f'{name}: checksum mismatch (md5 {got}, published {md5}): '
                        'the file is corrupted or not the canonical one.')


def parse_idx(name, data, ndim):
    """An IDX array of unsigned bytes with ``ndim`` dimensions from gzipped bytes."""
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f'{name}: not a readable gzip file ({e}).') from None
    header = 4 + 4 * ndim
    magic = 0x800 + ndim  # 0x08 = unsigned byte, then the number of dimensions
    if len(raw) < header or int.from_bytes(raw[:4], 'big') != magic:
        got = int.from_bytes(raw[:4], 'big') if len(raw) >= 4 else None
        raise DataError(f'{name}: magic number {got}, expected {magic} (an IDX file of '
                        f'unsigned bytes with {ndim} dimensions).')
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
    if len(raw) - header != math.prod(dims):
        raise DataError(f'{name}: the header announces {" x ".join(map(str, dims))} = '
                        f'{math.prod(dims)} bytes of data, the file holds {len(raw) - header}.')
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def check_labels(name, labels):
    if labels.size and labels.max() > 9:
        i = int(np.argmax(labels > 9))
        raise DataError(f'{name}: label {labels[i]} at index {i}, expected 0..9.')


def read_idx(contents):
    """Images (n, 784) uint8, labels (n,) uint8 and the number of training images.

    ``contents`` maps each IDX file name to its (gzipped) bytes.
    """
    images, labels = [], []
    for image_name, label_name in IDX_SETS:
        X = parse_idx(image_name, contents[image_name], 3)
        y = parse_idx(label_name, contents[label_name], 1)
        if X.shape[1:] != (28, 28):
            raise DataError(f'{image_name}: images are {X.shape[1]}x{X.shape[2]}, '
                            'expected 28x28.')
        if len(X) == 0 or len(X) != len(y):
            raise DataError(f'{image_name} holds {len(X)} images but {label_name} holds '
                            f'{len(y)} labels; expected the same number, at least 1.')
        check_labels(label_name, y)
        images.append(X.reshape(-1, 784))
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels), len(images[0])


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: a pickle can run any code it names."""

    ALLOWED = {('numpy._core.multiarray', '_reconstruct'): np.empty(0).__reduce__()[0],
               ('numpy.core.multiarray', '_reconstruct'): np.empty(0).__reduce__()[0],
               ('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype,
               ('_codecs', 'encode'): codecs.encode}  # how Python 3 pickles bytes for Python 2

    def find_class(self, module, name):
        try:
            return self.ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f'refusing to load {module}.{name}: only numpy arrays '
                                         'are allowed') from None


def read_pickle(name, data):
    """Images (n, 784) uint8, labels (n,) uint8 and the number of training images."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            sets = _ArrayUnpickler(f, encoding='latin1').load()
    except Exception as e:  # gzip, pickle and numpy errors all mean "not the classic file"
        raise DataError(f'{name}: not a readable gzipped pickle of numpy arrays '
                        f'({type(e).__name__}: {e}).') from None
    if not (isinstance(sets, (tuple, list)) and len(sets) == 3
            and all(isinstance(s, (tuple, list)) and len(s) == 2 for s in sets)):
        raise DataError(f'{name}: expected (train, validation, test), each a pair (images, '
                        f'labels), got {type(sets).__name__} of another layout.')
    images, labels = [], []
    for part, (X, y) in zip(('train', 'validation', 'test'), sets):
        if not (isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[1] == 784
                and X.dtype.kind == 'f' and len(X)):
            raise DataError(f'{name}: {part} images must be floats shaped (n, 784), got '
                            f'{getattr(X, "dtype", type(X).__name__)} {np.shape(X)}.')
        if not (isinstance(y, np.ndarray) and y.shape == (len(X),) and y.dtype.kind in 'iu'):
            raise DataError(f'{name}: {part} labels must be {len(X)} integers, got '
                            f'{getattr(y, "dtype", type(y).__name__)} {np.shape(y)}.')
        if y.min() < 0 or y.max() > 9:
            raise DataError(f'{name}: {part} labels range from {y.min()} to {y.max()}, '
                            'expected 0..9.')
        images.append(_from_256ths(name, part, X))
        labels.append(y.astype(np.uint8))
    return np.concatenate(images), np.concatenate(labels), len(images[0]) + len(images[1])


def _from_256ths(name, part, X, chunk=10_000):
    """The uint8 pixels behind the classic file's float ``pixel / 256``, row chunk by chunk."""
    out = np.empty(X.shape, np.uint8)
    for i in range(0, len(X), chunk):
        x = X[i:i + chunk] * 256  # exact: a power of two
        q = np.rint(x)
        bad = (np.abs(x - q) > 1e-3) | (q < 0) | (q > 255)
        if bad.any():
            raise DataError(f'{name}: {part} pixel value {x[bad][0] / 256} is not a multiple of '
                            '1/256 in [0, 255/256]; expected the classic uint8 / 256 encoding.')
        out[i:i + chunk] = q
    return out


# ---------------------------------------------------------------------------------------
# Download.

def download(dest=RAW_DIR, mirror=MIRROR):
    """Fetch the four IDX files from ``mirror`` into ``dest``, checksums verified.

    Files already in ``dest`` with the published checksums are kept. A download that fails
    or does not match leaves no file behind.
    """
    dest = Path(dest)
    for name in IDX_FILES:
        path = dest / name
        if path.exists():
            try:
                check_published(name, path.read_bytes())
                log.info('%s: already there, checksum ok', path)
                continue
            except DataError as e:
                log.info('%s; downloading it again', e)
        url = mirror.rstrip('/') + '/' + name
        data = _fetch(url, name)
        try:
            check_published(name, data)
        except DataError as e:
            raise DataError(f'download from {url} failed: {e}') from None
        with atomic_write(path) as f:
            f.write(data)
        log.info('%s: downloaded, checksum ok', path)


def _fetch(url, name):
    chunks = []
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
            total = int(response.headers.get('Content-Length') or 0) or None
            with tqdm(total=total, desc=name, unit='B', unit_scale=True, leave=False) as bar:
                while chunk := response.read(1 << 16):
                    chunks.append(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, HTTPException, OSError, ValueError) as e:
        raise DataError(f'download from {url} failed: {e}') from None
    data = b''.join(chunks)
    if total is not None and len(data) != total:
        raise DataError(f'download from {url} failed: the connection closed after '
                        f'{len(data)} of {total} bytes.')
    return data


# ---------------------------------------------------------------------------------------
# Splitting and writing.

def split_indices(n, n_train, split='random', seed=SEED):
    """Indices into the canonical order (training images, then test images) per split.

    ``'random'``: a seeded 70/20/10 of all ``n`` images that keeps the official sets apart:
    the training part (70% of n) is drawn from the ``n_train`` official training images only
    and the test part (10% of n) from the official test images only; validation holds the
    rest of both (for MNIST: 49,000 training, 11,000 + 3,000 validation, 7,000 test). So a
    net trained on the training part has seen no validation image and no official test image.
    ``'official'``: the first training images, the last 10,000 training images, the test set.
    """
    if split == 'official':
        if n_train <= OFFICIAL_VAL:
            raise DataError(f'--split official needs more than {OFFICIAL_VAL} training images '
                            f'(the last {OFFICIAL_VAL} validate), got {n_train}.')
        cut = n_train - OFFICIAL_VAL
        return dict(zip(SPLITS, (np.arange(cut), np.arange(cut, n_train), np.arange(n_train, n))))
    if split != 'random':
        raise ValueError(f"split must be 'random' or 'official', got {split!r}.")
    n_fit, n_test = round(RATIOS[0] * n), round(RATIOS[2] * n)
    if n_fit > n_train or n_test > n - n_train:
        raise DataError(f'the random split draws {n_fit} training images from the {n_train} '
                        f'official training images and {n_test} test images from the '
                        f'{n - n_train} official test images: there are too few.')
    rng = np.random.default_rng(seed)
    official_train, official_test = rng.permutation(n_train), n_train + rng.permutation(n - n_train)
    val = np.concatenate([official_train[n_fit:], official_test[n_test:]])
    return dict(zip(SPLITS, (official_train[:n_fit], rng.permutation(val),
                             official_test[:n_test])))


def pickle_path(output):
    return Path(output).with_suffix('.pkl')


def write_pickle(path, data):
    """The original layout: (train, val, test), each a list of (x (784, 1), y (10, 1)) pairs."""
    eye = np.eye(10, dtype=np.float32)
    sets = tuple([(x.reshape(784, 1), t.reshape(10, 1)) for x, t in zip(X, eye[y])]
                 for X, y in (data[name] for name in SPLITS))
    with atomic_write(path) as f:
        pickle.dump(sets, f, protocol=5)  # numpy arrays pickle fastest and leanest in 5


def _recorded(output):
    """The metadata stored in an earlier output, or None when there is no usable one."""
    try:
        with np.load(output, allow_pickle=False) as f:
            return json.loads(str(f['meta']))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def read_contents(fmt, contents):
    """(X uint8 (70000, 784), y, n_train) in canonical order from either format's files;
    ``contents`` maps file names to their bytes (as ``find_source`` found them)."""
    return read_idx(contents) if fmt == 'idx' else read_pickle(*next(iter(contents.items())))


def read_raw(source):
    """(X, y, n_train) from the raw MNIST in ``source`` (IDX files or mnist.pkl.gz)."""
    fmt, files = find_source(source)
    return read_contents(fmt, {p.name: p.read_bytes() for p in files})


def build(source=RAW_DIR, output=DEFAULT_OUTPUT, *, split='random', seed=SEED,
          write_pkl=False, force=False, verify=True):
    """Turn the raw MNIST in ``source`` into ``output``; return what was done.

    The result is a dict: ``written`` (paths; empty when the output was already up to date),
    ``counts`` (images per split), ``format`` ('idx' or 'pickle') and ``seconds``.
    ``verify=False`` accepts IDX files that differ from the published ones (still validated).
    """
    started = time.perf_counter()
    output = Path(output)
    fmt, files = find_source(source)
    contents = {p.name: p.read_bytes() for p in files}
    if verify and fmt == 'idx':
        for name, data in contents.items():
            check_published(name, data)
    meta = {'format_version': FORMAT_VERSION, 'split': split,
            'seed': seed if split == 'random' else None, 'source_format': fmt,
            'source_sha256': {name: hashlib.sha256(data).hexdigest()
                              for name, data in contents.items()}}
    pkl = pickle_path(output)
    pkl_fresh = not write_pkl or (pkl.exists() and output.exists()
                                  and pkl.stat().st_mtime_ns >= output.stat().st_mtime_ns)
    recorded = _recorded(output)
    if not force and pkl_fresh and recorded is not None \
            and {k: v for k, v in recorded.items() if k not in ('counts', 'samples')} == meta:
        return {'written': [], 'counts': recorded['counts'], 'format': fmt,
                'seconds': time.perf_counter() - started}

    X, y, n_train = read_contents(fmt, contents)
    indices = split_indices(len(X), n_train, split, seed)
    meta['counts'] = {name: len(index) for name, index in indices.items()}
    arrays = {'meta': np.str_(json.dumps(meta))}
    for name, index in indices.items():
        arrays[f'X_{name}'], arrays[f'y_{name}'] = X[index], y[index]
        arrays[f'index_{name}'] = index  # position in the canonical order, for provenance
    with atomic_write(output) as f:
        np.savez_compressed(f, **arrays)
    written = [output]
    if write_pkl:
        write_pickle(pkl, {name: (arrays[f'X_{name}'] / np.float32(255), arrays[f'y_{name}'])
                           for name in SPLITS})
        written.append(pkl)
    return {'written': written, 'counts': meta['counts'], 'format': fmt,
            'seconds': time.perf_counter() - started}


def read_export(path):
    """(ids, X uint8 (n, 784), y) of a GET /samples/export file, checked."""
    try:
        with np.load(path, allow_pickle=False) as f:
            ids, X, y = f['ids'], f['X'], f['y']
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f'{path} is not a samples export (GET /samples/export): {e}') from None
    n = len(X)
    if X.dtype != np.uint8 or X.shape != (n, 784) or y.shape != (n,) or ids.shape != (n,) \
            or not np.issubdtype(ids.dtype, np.integer) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f'{path}: X {X.dtype} {X.shape}, y {y.dtype} {y.shape}, ids {ids.dtype} '
                        f'{ids.shape}; a samples export holds X uint8 (n, 784), integer y (n,) '
                        'and ids (n,).')
    if n and (y.min() < 0 or y.max() > 9):
        bad = int(y[(y < 0) | (y > 9)][0])
        raise DataError(f'{path}: label {bad} is not a digit 0..9.')
    if len(np.unique(ids)) != n:
        raise DataError(f'{path}: a sample id occurs twice; export the samples again.')
    return ids.astype(np.int64), X, y.astype(np.uint8)


def merge_samples(export, output=DEFAULT_OUTPUT):
    """Add users' drawings from ``export`` (a GET /samples/export NPZ) to the training split of
    ``output``, so that a net trained on the file (``make models``, ``/train``, your own
    script) learns from them; returns {'added', 'held_out', 'already', 'counts'}.

    Every fifth sample by id (``is_sample_validation``) stays out, as the server keeps it out,
    so that what a net reads of those is never measured on drawings it trained on. Samples
    merged before (by id, recorded in the file's metadata) are not added twice. The other
    splits are untouched; ``index_train`` marks a sample as -id (MNIST rows are >= 0)."""
    output = Path(output)
    ids, X, y = read_export(export)
    recorded = _recorded(output)
    if recorded is None:
        raise DataError(f'{output} is not a preprocessed MNIST file: build it first with '
                        '`python preprocess.py`.')
    with np.load(output, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    merged = set(recorded.get('samples', {}).get('ids', []))
    held = is_sample_validation(ids)
    new = ~held & ~np.isin(ids, list(merged))
    arrays['X_train'] = np.concatenate([arrays['X_train'], X[new]])
    arrays['y_train'] = np.concatenate([arrays['y_train'], y[new].astype(arrays['y_train'].dtype)])
    arrays['index_train'] = np.concatenate([arrays['index_train'],
                                            -ids[new].astype(arrays['index_train'].dtype)])
    recorded['samples'] = {'ids': sorted(merged | set(ids[new].tolist()))}
    recorded['counts'] = {name: len(arrays[f'y_{name}']) for name in SPLITS}
    arrays['meta'] = np.str_(json.dumps(recorded))
    if new.any():
        with atomic_write(output) as f:
            np.savez_compressed(f, **arrays)
    return {'added': int(new.sum()), 'held_out': int(held.sum()),
            'already': int((~held).sum() - new.sum()), 'counts': recorded['counts']}


# ---------------------------------------------------------------------------------------
# Loading.

def load_dataset(path=DEFAULT_OUTPUT):
    """The splits ready for ``Graph.feed``: {'train': (X, y), 'val': (X, y), 'test': (X, y)}.

    X is float32 (n, 784) in [0, 1] (stored uint8 / 255), y int64 (n,) digit labels.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'{path} not found: build it with `python preprocess.py` '
                                '(or `make data`).')
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {name: (f[f'X_{name}'], f[f'y_{name}']) for name in SPLITS}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f'{path} is not a preprocessed MNIST file ({e}); rebuild it with '
                         '`python preprocess.py --force`.') from None
    for name, (X, y) in data.items():
        if X.dtype != np.uint8 or X.ndim != 2 or X.shape[1] != 784 or y.shape != (len(X),):
            raise ValueError(f'{path}: {name} holds {X.dtype} images {X.shape} and labels '
                             f'{y.shape}, expected uint8 (n, 784) and (n,); rebuild it with '
                             '`python preprocess.py --force`.')
    return {name: (np.divide(X, np.float32(255), dtype=np.float32), y.astype(np.int64))
            for name, (X, y) in data.items()}


# ---------------------------------------------------------------------------------------
# Command line.

def fetch_if_missing(mirror=MIRROR):
    """Download raw MNIST into data/raw/ unless find_mnist() finds some; 0 either way."""
    found = find_mnist()
    if found is not None:
        return 0
    try:
        download(RAW_DIR, mirror)
        print(f'Fetched raw MNIST into {RAW_DIR}.')
    except (DataError, OSError) as e:
        print(f'No raw MNIST (looked in {", ".join(map(str, mnist_dirs()))}) and it cannot be '
              f'fetched ({str(e)[:120]}): the tests that need it will skip. Set MNIST_DIR.')
    return 0


def _size(path):
    return f'{Path(path).stat().st_size / 1e6:.1f} MB'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--source', type=Path, default=find_mnist() or mnist_dirs()[0],
                        help='folder with the raw MNIST files (default: the first of $MNIST_DIR '
                             'and data/raw/ that has them)')
    parser.add_argument('--output', type=Path, default=DEFAULT_OUTPUT,
                        help='the NPZ to write (default: data/mnist_preprocessed.npz)')
    parser.add_argument('--split', choices=('random', 'official'), default='random',
                        help='random: seeded 70/20/10 of all 70,000 images, its 49,000 training '
                             'images from the official training set and its 7,000 test images from '
                             'the official test set (default); official: '
                             '50,000/10,000 of the training set and the official 10,000 test')
    parser.add_argument('--seed', type=int, default=SEED, help='seed of the random split')
    parser.add_argument('--pickle', action='store_true',
                        help='also write the original list-of-pairs pickle next to the output')
    parser.add_argument('--force', action='store_true', help='rebuild even when up to date')
    parser.add_argument('--download', action='store_true',
                        help='first fetch the IDX files (verified) into the source folder')
    parser.add_argument('--mirror', default=MIRROR,
                        help='base URL holding the four IDX .gz files (default: %(default)s)')
    parser.add_argument('--no-verify', action='store_true',
                        help='accept IDX files that differ from the published checksums')
    parser.add_argument('--fetch-if-missing', action='store_true',
                        help='only fetch the IDX files into data/raw/ when no raw MNIST is found '
                             '(make test); never fail, say in one line when it cannot')
    parser.add_argument('--if-available', action='store_true',
                        help='only build when raw files are found; never fail (for make run)')
    parser.add_argument('--merge-samples', type=Path, metavar='EXPORT',
                        help="add the users' drawings of a GET /samples/export file to the "
                             'training split of --output (every fifth by id stays out, as the '
                             'server keeps it out)')
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f'--seed must be a non-negative integer, got {args.seed}.')
    logging.basicConfig(level=logging.INFO, format='%(message)s')

    if args.fetch_if_missing:
        return fetch_if_missing(args.mirror)
    if args.merge_samples is not None:
        try:
            done = merge_samples(args.merge_samples, args.output)
        except (DataError, OSError) as e:
            print(f'preprocess.py: error: {e}', file=sys.stderr)
            return 1
        print(f'Added {done["added"]:,} drawings from {args.merge_samples} to the training split '
              f'of {args.output} ({done["counts"]["train"]:,} images now); '
              f'{done["held_out"]:,} held out (every fifth by id), '
              f'{done["already"]:,} merged before.')
        return 0
    if args.if_available and not has_source(args.source):
        print(f'No raw MNIST in {args.source}, so the server cannot train (predictions work): '
              'get it with `python preprocess.py --download` or set MNIST_DIR.')
        return 0
    try:
        if args.download:
            download(args.source, args.mirror)
        report = build(args.source, args.output, split=args.split, seed=args.seed,
                       write_pkl=args.pickle, force=args.force, verify=not args.no_verify)
    except (DataError, OSError) as e:  # OSError: a file that cannot be read or written
        if args.if_available:
            print(f'preprocess.py: {e} Starting without training data.', file=sys.stderr)
            return 0
        print(f'preprocess.py: error: {e}', file=sys.stderr)
        return 1

    how = f'split {args.split}' + (f', seed {args.seed}' if args.split == 'random' else '')
    if not report['written']:
        print(f'{args.output} is up to date ({how}, from {args.source}); --force rebuilds it.')
        return 0
    raw = 'the four IDX files' if report['format'] == 'idx' else PICKLE_FILE
    print(f'Wrote {args.output} ({_size(args.output)}) in {report["seconds"]:.1f} s from {raw} '
          f'in {args.source} ({how}):')
    for name, n in report['counts'].items():
        print(f'  {name:5} {n:6,} images: X ({n}, 784) uint8, y ({n},) uint8')
    if args.pickle:
        print(f'and {pickle_path(args.output)} ({_size(pickle_path(args.output))}): '
              '(train, val, test) lists of (x (784, 1), y (10, 1)) float32 pairs')
    return 0


if __name__ == '__main__':
    sys.exit(main())
