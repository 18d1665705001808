"""Random distortions of 28x28 digit images, for training nets that read real handwriting.

People drawing on a canvas write thicker or thinner, slanted, rotated, stretched and
off-centre digits; MNIST's are neat. ``augment`` applies to every image a random affine map
(rotation, scale per axis, shear, shift) and a random stroke-thickness change (grayscale
dilation or erosion), all drawn from a seeded ``np.random.Generator``:

    rng = np.random.default_rng(0)
    X_new = augment(X_train, rng)          # (n, 784) or (n, 28, 28), uint8 or float
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


def augment(images, rng, *, thickness=THICKNESS, **affine):
    """Randomly distorted copies of ``images``: (n, 784) or (n, 28, 28), uint8 or float.

    Returns an array of the same shape and dtype. ``affine`` overrides the ranges of
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
    out = np.empty_like(square)
    for img, M, dst in zip(square, affine_matrices(len(square), rng, **affine), out):
        cv2.warpAffine(img, M, (SIDE, SIDE), dst=dst, flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if images.dtype != np.uint8:
        out = out.astype(images.dtype) / images.dtype.type(255)
    return out.reshape(images.shape)
