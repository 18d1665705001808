"""Random distortions of 28x28 digit images, for training nets that read real handwriting.

People drawing on a canvas write thicker or thinner, slanted, rotated, stretched, wobbly and
off-centre digits; MNIST's are neat. ``augment`` applies to every image a random stroke-
thickness change (grayscale dilation or erosion), optionally an elastic distortion (Simard,
Steinkraus and Platt 2003: a random displacement field smoothed by a Gaussian), and a random
affine map (rotation, scale per axis, shear, shift), all drawn from a seeded
``np.random.Generator``:

    rng = np.random.default_rng(0)
    X_new = augment(X_train, rng)                  # (n, 784) or (n, 28, 28), uint8 or float
    X_new = augment(X_train, rng, elastic=True)    # with elastic distortions as well
"""
import cv2
import numpy as np

SIDE = 28

# Default ranges, chosen by measuring test and handwriting accuracy (README, "Pretrained models").
MAX_SHIFT = 2.0                 # pixels, each axis
MAX_ROTATION = 12.0             # degrees, either way
SCALE = (0.85, 1.1)             # per-axis zoom factor range
MAX_SHEAR = 0.25                # horizontal shear x += shear * y (slant)
THICKNESS = (0.2, 0.55, 0.25)   # probabilities of thinner (erode), unchanged, thicker (dilate)
ELASTIC_ALPHA = 34.0            # Simard et al.: displacement scale (pixels per unit field) ...
ELASTIC_SIGMA = 4.0             # ... and the Gaussian that smooths the random field (pixels)
_CHUNK = 4096                   # images distorted elastically at a time

_KERNEL = np.ones((2, 2), np.uint8)


def affine_matrices(n, rng, *, max_shift=MAX_SHIFT, max_rotation=MAX_ROTATION, scale=SCALE,
                    max_shear=MAX_SHEAR):
    """n random 2x3 affine maps (n, 2, 3) about the image centre, for cv2.warpAffine."""
    angle = np.radians(rng.uniform(-max_rotation, max_rotation, n))
    sx, sy = rng.uniform(*scale, (2, n))
    shear = rng.uniform(-max_shear, max_shear, n)
    cos, sin = np.cos(angle), np.sin(angle)
    # A = rotation @ shear @ diag(sx, sy), one (2, 2) block per image
    A = np.empty((n, 2, 2))
    A[:, 0, 0] = cos * sx
    A[:, 0, 1] = (cos * shear - sin) * sy
    A[:, 1, 0] = sin * sx
    A[:, 1, 1] = (sin * shear + cos) * sy
    centre = np.full(2, (SIDE - 1) / 2)
    shift = rng.uniform(-max_shift, max_shift, (n, 2))
    offset = centre - A @ centre + shift  # (n, 2): the centre moves by `shift`
    return np.concatenate([A, offset[:, :, None]], axis=2)


def change_thickness(images, rng, probabilities=THICKNESS):
    """Erode, keep or dilate each image (n, 28, 28) uint8 with the given probabilities."""
    p = np.asarray(probabilities, dtype=float)
    if p.shape != (3,) or np.any(p < 0) or not np.isclose(p.sum(), 1):
        raise ValueError('thickness probabilities must be 3 non-negative numbers summing to 1 '
                         f'(thinner, unchanged, thicker), got {probabilities!r}.')
    n = len(images)
    choice = rng.choice(3, size=n, p=p)
    # One call per operation on the images stacked vertically: (n * 28, 28). A 2x2 kernel
    # reaches 1 pixel into the next image, which is blank border for MNIST-style digits.
    tall = images.reshape(n * SIDE, SIDE)
    thinner = cv2.erode(tall, _KERNEL).reshape(images.shape)
    thicker = cv2.dilate(tall, _KERNEL).reshape(images.shape)
    return np.where((choice == 0)[:, None, None], thinner,
                    np.where((choice == 2)[:, None, None], thicker, images))


def displacement_fields(n, rng, alpha=ELASTIC_ALPHA, sigma=ELASTIC_SIGMA):
    """n random smooth displacement fields (n, 2, 28, 28) float32, in pixels: uniform noise
    in [-1, 1] per pixel and axis, blurred by a Gaussian of ``sigma`` (zero outside the
    image) and scaled by ``alpha``."""
    if not (alpha >= 0 and sigma > 0):
        raise ValueError(f'elastic alpha must be >= 0 and sigma > 0, got {alpha!r}, {sigma!r}.')
    offsets = np.arange(SIDE)[:, None] - np.arange(SIDE)[None, :]
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel[0].sum() + kernel[0, 1:].sum()  # the full 1-D kernel sums to 1
    kernel = kernel.astype(np.float32)  # (28, 28), symmetric: column j blurs around pixel j
    noise = rng.random((2 * n * SIDE, SIDE), dtype=np.float32)
    noise *= 2 * alpha
    noise -= alpha
    # The separable blur as two large products (not 2n small ones): along the rows, then,
    # transposed, along the columns.
    rows = (noise @ kernel).reshape(2 * n, SIDE, SIDE).transpose(0, 2, 1).reshape(-1, SIDE)
    return (rows @ kernel).reshape(2 * n, SIDE, SIDE).transpose(0, 2, 1).reshape(
        n, 2, SIDE, SIDE)


def elastic(images, rng, alpha=ELASTIC_ALPHA, sigma=ELASTIC_SIGMA):
    """Elastically distorted copies of ``images`` (n, 28, 28) uint8: each pixel (x, y) reads
    the source at (x + dx, y + dy) for a random smooth field (dx, dy) per image."""
    return _remap(images, displacement_fields(len(images), rng, alpha, sigma))


def _remap(images, fields, matrices=None):
    """images (n, 28, 28) uint8 resampled: pixel p of image k reads the source at
    A_k^-1 (p - t_k) + fields[k, :, p] for the affine maps ``matrices`` (n, 2, 3) = [A | t]
    (bilinear, black outside)."""
    x, y = np.indices((SIDE, SIDE), dtype=np.float32)[::-1]  # (28, 28) each
    if matrices is None:
        maps = fields + np.stack([x, y])
    else:  # the inverse of each map, as warpAffine applies it: (n, 2, 28, 28)
        inverse = np.linalg.inv(matrices[:, :, :2]).astype(np.float32)[:, :, :, None, None]
        t = matrices[:, :, 2].astype(np.float32)[:, :, None, None]
        px, py = x - t[:, 0], y - t[:, 1]  # (n, 28, 28)
        maps = fields + inverse[:, :, 0] * px[:, None] + inverse[:, :, 1] * py[:, None]
    out = np.empty_like(images)
    for img, (mx, my), dst in zip(images, maps, out):
        cv2.remap(img, mx, my, cv2.INTER_LINEAR, dst=dst, borderMode=cv2.BORDER_CONSTANT,
                  borderValue=0)
    return out


def augment(images, rng, *, thickness=THICKNESS, elastic=False, **affine):
    """Randomly distorted copies of ``images``: (n, 784) or (n, 28, 28), uint8 or float.

    Returns an array of the same shape and dtype. ``elastic``: False (default), True (Simard's
    alpha and sigma) or a pair (alpha, sigma). ``affine`` overrides the ranges of
    ``affine_matrices`` (max_shift, max_rotation, scale, max_shear).
    """
    images = np.asarray(images)
    if images.ndim not in (2, 3) or images.shape[1:] not in ((SIDE * SIDE,), (SIDE, SIDE)):
        raise ValueError(f'images must have shape (n, {SIDE * SIDE}) or (n, {SIDE}, {SIDE}), '
                         f'got {images.shape}.')
    square = images.reshape(-1, SIDE, SIDE)
    if images.dtype != np.uint8:  # work in uint8 like MNIST; float input is in [0, 1]
        square = np.clip(np.rint(square * 255), 0, 255).astype(np.uint8)
    square = change_thickness(square, rng, thickness)
    matrices = affine_matrices(len(square), rng, **affine)
    if elastic is not False:  # both in one resampling: the affine map, then the field
        alpha, sigma = (ELASTIC_ALPHA, ELASTIC_SIGMA) if elastic is True else elastic
        out = np.empty_like(square)
        for i in range(0, len(square), _CHUNK):  # fields of 6 KB per image: a chunk at a time
            part = slice(i, i + _CHUNK)
            out[part] = _remap(square[part], displacement_fields(
                len(square[part]), rng, alpha, sigma), matrices[part])
    else:
        out = np.empty_like(square)
        for img, M, dst in zip(square, matrices, out):
            cv2.warpAffine(img, M, (SIDE, SIDE), dst=dst, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if images.dtype != np.uint8:
        out = out.astype(images.dtype) / images.dtype.type(255)
    return out.reshape(images.shape)
