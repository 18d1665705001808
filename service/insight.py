"""What the page teaches with: pure functions, tested without a server.

- ``official_test``: the images a net's confusion matrix is measured on, MNIST's 10,000
  official test images shipped beside the models (models/mnist-test.npz); ``held_out``, the
  training file's test split, when that file is missing. Each comes with a sentence saying
  exactly which images they are.
- ``confusion``: a net's 10x10 confusion matrix on them, per-class accuracy, and the cells'
  examples as small PNGs with the net's confidence.
- ``activations``: what each hidden layer of a net does with one input (the library's own
  forward pass, ``Graph.activations``), bounded in size.
- ``unsure``: why an answer should not be trusted, in words, or None (the rule and its
  measured rates: docs/api.md, "Not sure"; measured by ``python -m bench.unsure``).
"""
import base64
import json
import zipfile

import cv2
import numpy as np

MNIST_TEST_IMAGES = 10_000  # the official test set: the last images in preprocess's order
TOP_UNITS = 32  # most active units reported per hidden layer
FULL_LAYER = 100  # a hidden layer this wide or narrower is reported whole
MAX_EXAMPLES = 100  # thumbnails one confusion cell answers with at most
# "Not sure": a confidence below this, or a drawing shaped unlike MNIST's digits (its ink
# fraction or the ratio of its horizontal to vertical spread outside the range of 99% of
# MNIST's test digits, measured by bench/unsure.py). The reasons are in docs/api.md.
SURE = 0.9
INK_RANGE = (0.0438, 0.2703)
SPREAD_RATIO_RANGE = (0.137, 1.445)


# ---------------------------------------------------------------------------------------
# Hidden activations, from the net's weights (the same maths as the library's forward pass).

def hidden_activation(net):
    """The name of the net's hidden layers' activation (Graph.layers())."""
    return net.layers()[0].activation


def hidden_layers(net, x):
    """The activations of every hidden layer for one input x (784,): a list of (n_l,)
    arrays, from the net's own forward pass (Graph.activations)."""
    return [a[0] for a in net.activations(np.asarray(x).reshape(-1))[:-1]]


def activations(net, x, top=TOP_UNITS, full=FULL_LAYER):
    """Each hidden layer for x, bounded: its size, its ``top`` most active units (index and
    value, most active first) and, for a layer of at most ``full`` units, every value."""
    out = []
    for number, a in enumerate(hidden_layers(net, x), start=1):
        order = np.argsort(-a, kind='stable')[:top]
        layer = {'layer': number, 'size': len(a), 'activation': hidden_activation(net),
                 'top': [{'unit': int(i), 'value': round(float(a[i]), 4)} for i in order]}
        if len(a) <= full:
            layer['values'] = np.round(a, 4).tolist()
        out.append(layer)
    return out


# ---------------------------------------------------------------------------------------
# "Not sure".

_INDEX = np.arange(28, dtype=np.float64)  # constants, read only: what a row's mass is at
_INDEX.flags.writeable = False
_SQUARES = _INDEX ** 2
_SQUARES.flags.writeable = False


def shape_of(x):
    """(ink fraction, horizontal / vertical spread of the ink) of a 28x28 input in [0, 1]."""
    image = np.asarray(x, np.float64).reshape(28, 28)
    mass = image.sum()
    if mass <= 0:
        return 0.0, 0.0
    index, squares = _INDEX, _SQUARES
    rows, columns = image.sum(axis=1) / mass, image.sum(axis=0) / mass
    var_y = rows @ squares - (rows @ index) ** 2
    var_x = columns @ squares - (columns @ index) ** 2
    return float(image.mean()), float(np.sqrt(var_x / var_y)) if var_y > 0 else float('inf')


BLANK = 'the input is blank (no ink at all): there is no digit to read'


def unsure(x, confidence):
    """Why the answer (its top ``confidence``) for input x should not be trusted, or None."""
    return _why(*shape_of(x), confidence)


def unsure_rows(X, confidences):
    """``unsure`` for every row of X (n, 784) in [0, 1] with the net's outputs (n, 10): a list
    of n reasons, None where the answer can be trusted (vectorised: 10,000 rows at once)."""
    images = np.asarray(X, np.float32).reshape(-1, 28, 28)
    mass = images.sum(axis=(1, 2), dtype=np.float64)
    index = np.arange(28, dtype=np.float64)
    with np.errstate(invalid='ignore', divide='ignore'):
        rows = images.sum(axis=2, dtype=np.float64) / mass[:, None]
        columns = images.sum(axis=1, dtype=np.float64) / mass[:, None]
        var_y = rows @ index ** 2 - (rows @ index) ** 2
        var_x = columns @ index ** 2 - (columns @ index) ** 2
        ratio = np.where(var_y > 0, np.sqrt(np.maximum(var_x, 0) / var_y), np.inf)
    ink = mass / 784
    top = np.asarray(confidences).max(axis=1)
    return [_why(float(i), float(r), float(c)) if m > 0 else BLANK
            for i, r, c, m in zip(ink, ratio, top, mass)]


def _why(ink, ratio, confidence):
    if ink <= 0:
        return BLANK
    if not SPREAD_RATIO_RANGE[0] <= ratio <= SPREAD_RATIO_RANGE[1]:
        return ('the drawing is much wider than MNIST digits (two digits side by side, or '
                'not a digit)'
                if ratio > SPREAD_RATIO_RANGE[1] else
                'the drawing is thinner than almost every MNIST digit')
    if not INK_RANGE[0] <= ink <= INK_RANGE[1]:
        much = 'more' if ink > INK_RANGE[1] else 'less'
        return (f'the drawing has {much} ink than almost every MNIST digit: it may not be '
                'one digit')
    if confidence < SURE:
        return f'the net gives its answer less than {SURE:.0%} confidence'
    return None


# ---------------------------------------------------------------------------------------
# The held-out images and confusion matrices.

TEST_IMAGES_FILE = 'mnist-test.npz'  # in the models folder: models/test_images.py writes it


def official_test(path):
    """(X (10000, 784) uint8, y (10000,) int64, description) of MNIST's official test images
    in the shipped file (models/MNIST-TEST.md). Raises OSError/ValueError/KeyError for a file
    that is unreadable or not shaped as it should be; never unpickles."""
    with np.load(path, allow_pickle=False) as f:
        X, y = f['X'], f['y']
    if X.dtype != np.uint8 or X.shape != (MNIST_TEST_IMAGES, 784):
        raise ValueError(f'it holds {X.dtype} images {X.shape}, expected uint8 '
                         f'({MNIST_TEST_IMAGES}, 784)')
    if y.dtype != np.uint8 or y.shape != (MNIST_TEST_IMAGES,) or y.max(initial=0) > 9:
        raise ValueError(f'it holds {y.dtype} labels {y.shape}, expected uint8 digits '
                         f'({MNIST_TEST_IMAGES},)')
    source = (f"MNIST's official {MNIST_TEST_IMAGES:,} test images, which no net here "
              'trained on')
    return X, y.astype(np.int64), {'count': MNIST_TEST_IMAGES, 'source': source,
                                   'file': path.name}

def held_out(path):
    """(X (n, 784) uint8, y (n,) int64, description) of the images confusion matrices are
    measured on: the training file's test split, only the images that come from MNIST's
    official test set when the file records where each image came from (a random split
    draws its test split from all 70,000 images, and the shipped models trained on the
    60,000 training images). Raises OSError/ValueError/KeyError for an unreadable file."""
    with np.load(path, allow_pickle=False) as f:
        X, y = f['X_test'], f['y_test'].astype(np.int64)
        index = f['index_test'] if 'index_test' in f.files else None
        meta = json.loads(str(f['meta'])) if 'meta' in f.files else {}
    if X.dtype != np.uint8 or X.ndim != 2 or X.shape[1] != 784 or y.shape != (len(X),):
        raise ValueError(f'its test split holds {X.dtype} images {X.shape} and labels '
                         f'{y.shape}, expected uint8 (n, 784) and (n,)')
    counts = meta.get('counts')
    total = sum(counts.values()) if isinstance(counts, dict) else None
    if index is not None and total is not None and index.shape == y.shape:
        official = index >= total - MNIST_TEST_IMAGES
        X, y = X[official], y[official]
        split = meta.get('split', 'random')
        source = (f"the {len(y):,} images of the training file's test split ({split} split) "
                  f"that come from MNIST's official {MNIST_TEST_IMAGES:,}-image test set: "
                  'no net here trained on them')
    else:
        source = (f"the {len(y):,} images of the training file's test split (the file does "
                  'not record which MNIST images they are)')
    if not len(y):
        raise ValueError("its test split holds none of MNIST's official test images")
    return X, y, {'count': len(y), 'source': source, 'file': path.name}


def confusion(net, X, y):
    """A net's reading of the held-out images: {"matrix": 10x10 counts (row: true digit,
    column: digit read), "per_class": accuracy per true digit, "accuracy", "read" (n,)
    labels, "confidence" (n,) of the digit read}."""
    labels, outputs = net.predict_batch(X)
    matrix = np.bincount(y * 10 + labels, minlength=100).reshape(10, 10)
    per_row = matrix.sum(axis=1)
    per_class = [round(float(matrix[d, d] / per_row[d]), 4) if per_row[d] else None
                 for d in range(10)]
    return {'matrix': matrix.tolist(), 'per_class': per_class,
            'accuracy': round(float(np.trace(matrix) / len(y)), 4), 'read': labels,
            'confidence': outputs[np.arange(len(y)), labels].astype(np.float64)}


def thumbnail(pixels):
    """A 784-pixel uint8 image (white on black) as a PNG data URL."""
    png = cv2.imencode('.png', np.asarray(pixels, np.uint8).reshape(28, 28))[1]
    return 'data:image/png;base64,' + base64.b64encode(png.tobytes()).decode('ascii')


def examples(result, X, y, true, read, limit):
    """The images of one cell (true digit, digit read), the most confidently read first, at
    most ``limit``: (how many the cell holds, [{index, confidence, image}])."""
    cell = np.flatnonzero((y == true) & (result['read'] == read))
    order = cell[np.argsort(-result['confidence'][cell], kind='stable')][:limit]
    return len(cell), [{'index': int(i), 'confidence': round(float(result['confidence'][i]), 4),
                        'image': thumbnail(X[i])} for i in order]


READ_ERRORS = (OSError, KeyError, ValueError, zipfile.BadZipFile)
