"""augment.py: the random distortions keep what they should and change what they should."""
import numpy as np
import pytest

from augment import affine_matrices, augment, change_thickness, displacement_fields, elastic

NO_AFFINE = dict(max_shift=0, max_rotation=0, scale=(1, 1), max_shear=0)


@pytest.fixture(scope='module')
def digits(mnist):
    (X, _), _ = mnist
    return X[:200].reshape(-1, 28, 28)


def centre_of_mass(images):
    images = images.astype(float)
    ys, xs = np.indices(images.shape[1:])
    mass = images.sum(axis=(1, 2))
    return np.column_stack([(images * xs).sum(axis=(1, 2)) / mass,
                            (images * ys).sum(axis=(1, 2)) / mass])


def test_no_distortion_is_the_identity(digits):
    out = augment(digits, np.random.default_rng(0), thickness=(0, 1, 0), **NO_AFFINE)
    np.testing.assert_array_equal(out, digits)


def test_affine_maps_have_the_drawn_area_and_keep_the_centre_near():
    rng = np.random.default_rng(1)
    M = affine_matrices(1000, rng, max_shift=2, max_rotation=20, scale=(0.8, 1.2), max_shear=0.3)
    assert M.shape == (1000, 2, 3)
    # rotation and shear keep areas, so det(A) = sx * sy lies in [0.8^2, 1.2^2]
    det = np.linalg.det(M[:, :, :2])
    assert det.min() >= 0.64 - 1e-9 and det.max() <= 1.44 + 1e-9
    assert det.min() < 0.75 and det.max() > 1.3  # and the range is used
    centre = np.full(2, 13.5)
    moved = M[:, :, :2] @ centre + M[:, :, 2] - centre
    assert np.abs(moved).max() <= 2 + 1e-9 and np.abs(moved).max() > 1.9


def test_rotation_alone_is_orthogonal():
    M = affine_matrices(50, np.random.default_rng(2), max_shift=0, max_rotation=30,
                        scale=(1, 1), max_shear=0)
    A = M[:, :, :2]
    np.testing.assert_allclose(A @ A.transpose(0, 2, 1), np.broadcast_to(np.eye(2), A.shape),
                               atol=1e-12)
    assert np.abs(A[:, 1, 0]).max() > np.sin(np.radians(25))  # angles up to 30 degrees


def test_shift_moves_the_ink_by_at_most_the_shift(digits):
    out = augment(digits, np.random.default_rng(3), thickness=(0, 1, 0),
                  **dict(NO_AFFINE, max_shift=2))
    moved = np.linalg.norm(centre_of_mass(out) - centre_of_mass(digits), axis=1)
    assert moved.max() <= 2 * np.sqrt(2) + 0.1
    assert np.median(moved) > 0.5


def test_thickness_dilates_and_erodes(digits):
    rng = np.random.default_rng(4)
    ink = digits.sum(axis=(1, 2), dtype=np.int64)
    thicker = change_thickness(digits, rng, (0, 0, 1)).sum(axis=(1, 2), dtype=np.int64)
    thinner = change_thickness(digits, rng, (1, 0, 0)).sum(axis=(1, 2), dtype=np.int64)
    assert np.all(thicker > ink) and np.all(thinner < ink)
    assert np.median(thicker / ink) > 1.3 and np.median(thinner / ink) < 0.7


def test_same_seed_same_images_and_shapes_kept(digits):
    flat = digits.reshape(-1, 784)
    a = augment(flat, np.random.default_rng(5))
    b = augment(flat, np.random.default_rng(5))
    c = augment(flat, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert a.shape == flat.shape and a.dtype == np.uint8
    assert np.mean(a != c) > 0.05
    changed = np.mean(np.any(a != flat, axis=1))
    assert changed > 0.95


def test_float_images_stay_floats_in_range(digits):
    x = digits[:20].reshape(-1, 784).astype(np.float32) / 255
    out = augment(x, np.random.default_rng(7))
    assert out.dtype == np.float32 and out.shape == x.shape
    assert 0 <= out.min() and out.max() <= 1 and out.max() > 0.9


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r'\(5, 10\)'):
        augment(np.zeros((5, 10)), np.random.default_rng(0))
    with pytest.raises(ValueError, match='summing to 1'):
        augment(np.zeros((1, 784)), np.random.default_rng(0), thickness=(0.5, 0.5, 0.5))


def test_elastic_fields_are_smooth_and_scale_with_alpha():
    fields = displacement_fields(400, np.random.default_rng(8), alpha=10, sigma=4)
    assert fields.shape == (400, 2, 28, 28) and fields.dtype == np.float32
    # neighbouring pixels move together (a smooth field), distant ones independently
    near = np.corrcoef(fields[:, 0, 14, 14], fields[:, 0, 14, 15])[0, 1]
    far = np.corrcoef(fields[:, 0, 14, 2], fields[:, 0, 14, 26])[0, 1]
    assert near > 0.9 and abs(far) < 0.2
    again = displacement_fields(400, np.random.default_rng(8), alpha=20, sigma=4)
    np.testing.assert_allclose(again, 2 * fields, rtol=1e-5, atol=1e-6)
    assert 0.2 < fields.std() < 1  # alpha 10 moves pixels by a fraction of a pixel


def test_elastic_distortion_moves_strokes_but_keeps_the_ink(digits):
    out = elastic(digits, np.random.default_rng(9))
    assert out.shape == digits.shape and out.dtype == np.uint8
    assert np.mean(np.any(out != digits, axis=(1, 2))) > 0.99
    ink_ratio = out.sum(axis=(1, 2), dtype=np.int64) / digits.sum(axis=(1, 2), dtype=np.int64)
    assert 0.8 < np.median(ink_ratio) < 1.2
    moved = np.linalg.norm(centre_of_mass(out) - centre_of_mass(digits), axis=1)
    assert np.median(moved) < 1.5  # a local wobble, not a shift of the whole digit
    np.testing.assert_array_equal(out, elastic(digits, np.random.default_rng(9)))


def test_a_zero_field_is_the_affine_map_alone(digits):
    # one resampling for both: with alpha 0 it must give warpAffine's result (to one grey
    # level: remap rounds the source coordinates its own way)
    with_field = augment(digits, np.random.default_rng(10), elastic=(0, 4)).astype(int)
    affine_only = augment(digits, np.random.default_rng(10))
    assert np.abs(with_field - affine_only).max() <= 1
    assert np.mean(with_field != affine_only) < 1e-4
    distorted = augment(digits, np.random.default_rng(10), elastic=True)
    assert np.mean(distorted != affine_only) > 0.05


def test_bad_elastic_parameters_are_named(digits):
    with pytest.raises(ValueError, match='-1'):
        augment(digits[:2], np.random.default_rng(0), elastic=(-1, 4))
