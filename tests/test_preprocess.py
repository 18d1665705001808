"""Tests of preprocess.py: real MNIST in both formats, generated IDX files, every validation
failure, downloads from a local HTTP server, the splits, no-op reruns and atomic writes."""
import functools
import gzip
import http.server
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest

import better_tensorflow as btf
import preprocess
from preprocess import DataError

from .conftest import IDX_FILES

TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = IDX_FILES
N_TRAIN, N_TEST = 40, 10  # generated data sets


def idx_bytes(array, magic=None):
    """Raw (not gzipped) IDX bytes of a uint8 array; magic 0x800 + ndim unless given."""
    magic = 0x800 + array.ndim if magic is None else magic
    dims = b''.join(int(d).to_bytes(4, 'big') for d in array.shape)
    return magic.to_bytes(4, 'big') + dims + array.astype(np.uint8).tobytes()


def write_idx_source(folder, images, labels, n_train=N_TRAIN):
    """The four IDX .gz files of images (n, 28, 28) and labels (n,), split at n_train."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (images[:n_train], labels[:n_train], images[n_train:], labels[n_train:])
    for name, array in zip(IDX_FILES, arrays):
        (folder / name).write_bytes(gzip.compress(idx_bytes(array)))
    return folder


def write_classic_pickle(path, images, labels, n_val=10, n_train=N_TRAIN):
    """A mnist.pkl.gz the classic way: float32 pixels / 256, int64 labels, protocol 2."""
    X = images.reshape(len(images), 784).astype(np.float32) / 256
    y = labels.astype(np.int64)
    cut = n_train - n_val
    sets = ((X[:cut], y[:cut]), (X[cut:n_train], y[cut:n_train]), (X[n_train:], y[n_train:]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(pickle.dumps(sets, protocol=2)))
    return path


@pytest.fixture
def small(tmp_path):
    """Generated MNIST-shaped data: (images (50, 28, 28) uint8, labels (50,), its IDX folder)."""
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (N_TRAIN + N_TEST, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, N_TRAIN + N_TEST).astype(np.uint8)
    return images, labels, write_idx_source(tmp_path / 'raw', images, labels)


def build_small(source, output, **options):
    return preprocess.build(source, output, verify=False, **options)


def arrays_of(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.endswith('.tmp'))


# ---------------------------------------------------------------------------------------
# Real MNIST.

@pytest.fixture(scope='module')
def real(mnist_dir, tmp_path_factory):
    """The default build from the IDX files and from mnist.pkl.gz, and the official split."""
    pkl = mnist_dir / preprocess.PICKLE_FILE
    if not pkl.exists():
        (pytest.fail if os.environ.get('CI') else pytest.skip)(f'{pkl} not found')
    out = tmp_path_factory.mktemp('real')
    (out / 'pickle_only').mkdir()
    (out / 'pickle_only' / pkl.name).symlink_to(pkl)
    preprocess.build(mnist_dir, out / 'idx.npz')
    preprocess.build(out / 'pickle_only', out / 'pickle.npz')
    preprocess.build(mnist_dir, out / 'official.npz', split='official')
    return out


def test_idx_files_and_classic_pickle_give_identical_output(real):
    idx, pkl = arrays_of(real / 'idx.npz'), arrays_of(real / 'pickle.npz')
    assert set(idx) == set(pkl)
    for key in idx.keys() - {'meta'}:
        np.testing.assert_array_equal(idx[key], pkl[key], err_msg=key)
    assert '"source_format": "idx"' in str(idx['meta'])
    assert '"source_format": "pickle"' in str(pkl['meta'])


def test_official_split_is_the_canonical_order(real, mnist):
    (X, y), (Xt, yt) = mnist
    data = preprocess.load_dataset(real / 'official.npz')
    for (got_X, got_y), want_X, want_y in ((data['train'], X[:50000], y[:50000]),
                                           (data['val'], X[50000:], y[50000:]),
                                           (data['test'], Xt, yt)):
        np.testing.assert_array_equal(got_X, want_X / np.float32(255))
        np.testing.assert_array_equal(got_y, want_y)
        assert got_X.dtype == np.float32 and got_y.dtype == np.int64
    assert np.bincount(data['test'][1]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958,
                                                     1028, 974, 1009]


def test_random_split_is_70_20_10_disjoint_and_traceable(real, mnist):
    (X, y), (Xt, yt) = mnist
    canonical_X, canonical_y = np.concatenate([X, Xt]), np.concatenate([y, yt])
    stored = arrays_of(real / 'idx.npz')
    index = {name: stored[f'index_{name}'] for name in preprocess.SPLITS}
    assert [len(index[name]) for name in preprocess.SPLITS] == [49000, 14000, 7000]
    everything = np.concatenate(list(index.values()))
    assert np.array_equal(np.sort(everything), np.arange(70000))  # disjoint and complete
    # Lineage: training images only from the official training set, test images only from
    # the official test set, validation the rest of both.
    assert index['train'].max() < 60000 and index['test'].min() >= 60000
    assert np.count_nonzero(index['val'] >= 60000) == 3000
    assert len(np.unique(index['train'])) == 49000
    assert np.bincount(y[index['train']], minlength=10).min() > 4000  # a random draw: all digits
    for name in preprocess.SPLITS:
        np.testing.assert_array_equal(stored[f'X_{name}'], canonical_X[index[name]])
        np.testing.assert_array_equal(stored[f'y_{name}'], canonical_y[index[name]])


def test_real_rerun_is_a_noop(real, mnist_dir):
    before = (real / 'idx.npz').stat().st_mtime_ns
    assert preprocess.build(mnist_dir, real / 'idx.npz')['written'] == []
    assert (real / 'idx.npz').stat().st_mtime_ns == before


# ---------------------------------------------------------------------------------------
# Generated data: processing, splits, outputs.

def test_small_idx_build_stores_uint8_pixels_and_loads_scaled(small, tmp_path):
    images, labels, source = small
    out = tmp_path / 'out.npz'
    report = build_small(source, out)
    assert report['written'] == [out] and report['counts'] == {'train': 35, 'val': 10, 'test': 5}
    stored = arrays_of(out)
    data = preprocess.load_dataset(out)
    flat = images.reshape(-1, 784)
    for name in preprocess.SPLITS:
        assert stored[f'X_{name}'].dtype == np.uint8
        X, y = data[name]
        np.testing.assert_array_equal(X, flat[stored[f'index_{name}']] / np.float32(255))
        np.testing.assert_array_equal(y, labels[stored[f'index_{name}']])
        assert X.dtype == np.float32 and y.dtype == np.int64


def test_loaded_data_feeds_a_graph(small, tmp_path):
    _, _, source = small
    build_small(source, tmp_path / 'out.npz')
    data = preprocess.load_dataset(tmp_path / 'out.npz')
    net = btf.Graph((784, 5, 10), 0.5, 8, seed=0)
    net.feed(data['train'], data['val'])
    np.testing.assert_array_equal(net.train_data[0], data['train'][0])
    np.testing.assert_array_equal(net.val_data[1], data['val'][1])


def test_small_classic_pickle_gives_the_same_output_as_idx(small, tmp_path):
    images, labels, source = small
    path = write_classic_pickle(tmp_path / 'pkl' / 'mnist.pkl.gz', images, labels)
    X, y, n_train = preprocess.read_pickle(path.name, path.read_bytes())
    assert n_train == N_TRAIN  # training + validation come before the test images
    np.testing.assert_array_equal(X, images.reshape(-1, 784))
    np.testing.assert_array_equal(y, labels)
    build_small(source, tmp_path / 'idx.npz', seed=3)
    build_small(tmp_path / 'pkl', tmp_path / 'pkl.npz', seed=3)
    idx, pkl = arrays_of(tmp_path / 'idx.npz'), arrays_of(tmp_path / 'pkl.npz')
    for key in idx.keys() - {'meta'}:
        np.testing.assert_array_equal(idx[key], pkl[key], err_msg=key)


@pytest.mark.parametrize('n,n_train', [(70000, 60000), (50, 40)])
def test_random_split_keeps_the_official_sets_apart(n, n_train):
    index = preprocess.split_indices(n, n_train, 'random', seed=4)
    assert [len(index[s]) for s in preprocess.SPLITS] == \
        [round(0.7 * n), n - round(0.7 * n) - round(0.1 * n), round(0.1 * n)]
    assert index['train'].max() < n_train <= index['test'].min()
    assert sorted(np.concatenate(list(index.values()))) == list(range(n))
    # validation mixes both sources, not in source order
    assert index['val'].max() >= n_train > index['val'].min()
    assert not np.all(np.diff(index['val']) > 0)


def test_random_split_refuses_too_few_official_test_images():
    with pytest.raises(DataError, match='7000 test images from the 5000'):
        preprocess.split_indices(70000, 65000, 'random')


def test_random_split_is_deterministic_per_seed():
    a = preprocess.split_indices(70000, 60000, 'random', seed=0)
    b = preprocess.split_indices(70000, 60000, 'random', seed=0)
    c = preprocess.split_indices(70000, 60000, 'random', seed=1)
    for name in preprocess.SPLITS:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a['train'], c['train'])
    assert sorted(np.concatenate([c['train'], c['val'], c['test']])) == list(range(70000))


def test_same_seed_gives_the_same_file_contents(small, tmp_path):
    _, _, source = small
    build_small(source, tmp_path / 'a.npz', seed=5)
    build_small(source, tmp_path / 'b.npz', seed=5)
    build_small(source, tmp_path / 'c.npz', seed=6)
    a, b, c = (arrays_of(tmp_path / f'{k}.npz') for k in 'abc')
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a['index_train'], c['index_train'])


def test_official_split_needs_more_than_10000_training_images(small, tmp_path):
    _, _, source = small
    with pytest.raises(DataError, match=f'needs more than 10000 training images.*got {N_TRAIN}'):
        build_small(source, tmp_path / 'out.npz', split='official')
    assert not (tmp_path / 'out.npz').exists()


def test_pickle_output_is_the_original_list_of_pairs(small, tmp_path):
    _, _, source = small
    out = tmp_path / 'out.npz'
    report = build_small(source, out, write_pkl=True)
    assert report['written'] == [out, tmp_path / 'out.pkl']
    with open(tmp_path / 'out.pkl', 'rb') as f:
        sets = pickle.load(f)
    data = preprocess.load_dataset(out)
    assert isinstance(sets, tuple) and [len(s) for s in sets] == [35, 10, 5]
    for pairs, name in zip(sets, preprocess.SPLITS):
        X, y = data[name]
        for (x, t), want_x, want_y in zip(pairs, X, y):
            assert x.shape == (784, 1) and t.shape == (10, 1)
            np.testing.assert_array_equal(x[:, 0], want_x)
            assert t.sum() == 1 and t[want_y, 0] == 1


# ---------------------------------------------------------------------------------------
# Re-runs and atomic writes.

def test_rerun_is_a_noop_until_sources_or_options_change(small, tmp_path):
    images, labels, source = small
    out = tmp_path / 'out.npz'
    assert build_small(source, out)['written'] == [out]
    stamp = out.stat().st_mtime_ns
    assert build_small(source, out)['written'] == []
    assert out.stat().st_mtime_ns == stamp
    assert build_small(source, out, force=True)['written'] == [out]
    assert build_small(source, out, seed=1)['written'] == [out]
    assert build_small(source, out, seed=1)['written'] == []

    changed = labels.copy()
    changed[0] = (changed[0] + 1) % 10
    write_idx_source(source, images, changed)
    assert build_small(source, out, seed=1)['written'] == [out]
    stored = arrays_of(out)
    index = np.concatenate([stored[f'index_{name}'] for name in preprocess.SPLITS])
    y = np.concatenate([stored[f'y_{name}'] for name in preprocess.SPLITS])
    assert y[index == 0].tolist() == [changed[0]]


def test_a_missing_pickle_or_damaged_output_is_rebuilt(small, tmp_path):
    _, _, source = small
    out = tmp_path / 'out.npz'
    build_small(source, out)
    assert build_small(source, out, write_pkl=True)['written'] == [out, tmp_path / 'out.pkl']
    assert build_small(source, out, write_pkl=True)['written'] == []
    out.write_bytes(b'not a zip file')
    assert build_small(source, out)['written'] == [out]
    assert preprocess.load_dataset(out)['train'][0].shape == (35, 784)


def test_up_to_date_output_still_needs_verified_sources(small, tmp_path):
    _, _, source = small
    build_small(source, tmp_path / 'out.npz')
    with pytest.raises(DataError, match=f'{TRAIN_IMAGES}: .* bytes, expected 9912422'):
        preprocess.build(source, tmp_path / 'out.npz')


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / 'file.bin'
    with pytest.raises(RuntimeError):
        with preprocess.atomic_write(target) as f:
            f.write(b'half')
            raise RuntimeError('disk full')
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b'old')
    with pytest.raises(RuntimeError):
        with preprocess.atomic_write(target) as f:
            f.write(b'new')
            raise RuntimeError('disk full')
    assert target.read_bytes() == b'old' and leftovers(tmp_path) == []


def test_atomic_write_gives_files_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    with preprocess.atomic_write(tmp_path / 'file.bin') as f:
        f.write(b'data')
    assert (tmp_path / 'file.bin').stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_rebuild_keeps_the_old_output(small, tmp_path, capsys):
    images, labels, source = small
    out = tmp_path / 'out.npz'
    build_small(source, out)
    before = out.read_bytes()
    (source / TEST_LABELS).write_bytes(gzip.compress(idx_bytes(labels[:3])))
    code = preprocess.main(['--source', str(source), '--output', str(out), '--force',
                            '--no-verify'])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith('preprocess.py: error: ') and TEST_IMAGES in err and '3 labels' in err
    assert out.read_bytes() == before and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------
# Validation: every problem names the file and what is wrong; nothing is written.

IDX_PROBLEMS = {
    'images magic': (TRAIN_IMAGES, lambda i, l: gzip.compress(idx_bytes(i[:N_TRAIN], 2049)),
                     'magic number 2049, expected 2051'),
    'labels magic': (TRAIN_LABELS, lambda i, l: gzip.compress(idx_bytes(l[:N_TRAIN], 2051)),
                     'magic number 2051, expected 2049'),
    'not 28x28': (TEST_IMAGES, lambda i, l: gzip.compress(idx_bytes(i[N_TRAIN:, :27])),
                  'images are 27x28, expected 28x28'),
    'short data': (TRAIN_IMAGES, lambda i, l: gzip.compress(idx_bytes(i[:N_TRAIN])[:-100]),
                   'announces 40 x 28 x 28 = 31360 bytes of data, the file holds 31260'),
    'extra data': (TRAIN_LABELS, lambda i, l: gzip.compress(idx_bytes(l[:N_TRAIN]) + b'\0'),
                   'announces 40 = 40 bytes of data, the file holds 41'),
    'counts differ': (TRAIN_LABELS, lambda i, l: gzip.compress(idx_bytes(l[:N_TRAIN - 1])),
                      f'{TRAIN_IMAGES} holds 40 images but {TRAIN_LABELS} holds 39 labels'),
    'label 10': (TEST_LABELS, lambda i, l: gzip.compress(idx_bytes(np.r_[l[N_TRAIN:-1], 10])),
                 'label 10 at index 9, expected 0..9'),
    'not gzip': (TRAIN_LABELS, lambda i, l: idx_bytes(l[:N_TRAIN]),
                 'not a readable gzip file'),
    'cut gzip': (TRAIN_IMAGES, lambda i, l: gzip.compress(idx_bytes(i[:N_TRAIN]))[:5000],
                 'not a readable gzip file'),
    'empty file': (TEST_IMAGES, lambda i, l: b'', 'magic number None, expected 2051'),
}


@pytest.mark.parametrize('problem', IDX_PROBLEMS)
def test_bad_idx_file_is_named_and_nothing_is_written(small, tmp_path, problem):
    images, labels, source = small
    name, make, message = IDX_PROBLEMS[problem]
    (source / name).write_bytes(make(images, labels))
    with pytest.raises(DataError) as error:
        build_small(source, tmp_path / 'out.npz')
    assert name in str(error.value) and message in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['raw']


def test_corrupted_gzip_stream_is_reported(small, tmp_path):
    images, _, source = small
    data = bytearray(gzip.compress(idx_bytes(images[:N_TRAIN])))
    data[len(data) // 2] ^= 0xFF
    (source / TRAIN_IMAGES).write_bytes(bytes(data))
    with pytest.raises(DataError, match=f'^{TRAIN_IMAGES}: not a readable gzip file'):
        build_small(source, tmp_path / 'out.npz')


def test_missing_files_are_listed(small, tmp_path):
    _, _, source = small
    (source / TEST_LABELS).unlink()
    with pytest.raises(DataError, match=f'incomplete MNIST, missing {TEST_LABELS};.*--download'):
        build_small(source, tmp_path / 'out.npz')
    with pytest.raises(DataError, match='no MNIST found .* or mnist.pkl.gz'):
        build_small(tmp_path / 'empty', tmp_path / 'out.npz')


def test_published_checksums_catch_truncated_and_corrupted_files(mnist_dir, tmp_path):
    source = tmp_path / 'raw'
    source.mkdir()
    for name in (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES):
        (source / name).symlink_to(mnist_dir / name)
    good = (mnist_dir / TEST_LABELS).read_bytes()
    (source / TEST_LABELS).write_bytes(good[:3000])
    with pytest.raises(DataError, match=f'^{TEST_LABELS}: 3000 bytes, expected 4542'):
        preprocess.build(source, tmp_path / 'out.npz')
    corrupted = bytearray(good)
    corrupted[2000] ^= 0x01
    (source / TEST_LABELS).write_bytes(bytes(corrupted))
    with pytest.raises(DataError, match=f'^{TEST_LABELS}: checksum mismatch .*published '
                                        'ec29112dd5afa0611ce80d1b7f02629c'):
        preprocess.build(source, tmp_path / 'out.npz')
    assert not (tmp_path / 'out.npz').exists()


class Evil:
    """Unpickling this runs code, unless the unpickler refuses to."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f'open({str(self.marker)!r}, "w").close()',)


def _classic(images, labels, **change):
    X = images.reshape(-1, 784).astype(np.float32) / 256
    y = labels.astype(np.int64)
    parts = {'train': (X[:30], y[:30]), 'val': (X[30:40], y[30:40]), 'test': (X[40:], y[40:])}
    parts.update(change)
    return tuple(parts.values())


PICKLE_PROBLEMS = {
    'not a pickle': (lambda i, l: b'hello', 'not a readable gzipped pickle of numpy arrays'),
    'two sets': (lambda i, l: _classic(i, l)[:2], 'expected (train, validation, test)'),
    'pixels 783': (lambda i, l: _classic(i, l, train=(i.reshape(-1, 784)[:30, :783] / 256,
                                                     l[:30].astype(np.int64))),
                   'train images must be floats shaped (n, 784), got float64 (30, 783)'),
    'uint8 pixels': (lambda i, l: _classic(i, l, val=(i.reshape(-1, 784)[30:40], l[30:40])),
                     'validation images must be floats shaped (n, 784), got uint8 (10, 784)'),
    'float labels': (lambda i, l: _classic(i, l, test=(i.reshape(-1, 784)[40:] / 256,
                                                      l[40:] * 1.0)),
                     'test labels must be 10 integers, got float64 (10,)'),
    'label 12': (lambda i, l: _classic(i, l, val=(i.reshape(-1, 784)[30:40] / 256,
                                                  np.r_[l[30:39], 12])),
                 'validation labels range from 0 to 12, expected 0..9'),
    'scaled by 255': (lambda i, l: _classic(i, l, train=((np.arange(30 * 784).reshape(30, 784)
                                                           % 256 / 255).astype(np.float32),
                                                          l[:30].astype(np.int64))),
                      f'train pixel value {np.float32(1 / 255)} is not a multiple of 1/256'),
}


@pytest.mark.parametrize('problem', PICKLE_PROBLEMS)
def test_bad_classic_pickle_is_named_and_nothing_is_written(small, tmp_path, problem):
    images, labels, _ = small
    make, message = PICKLE_PROBLEMS[problem]
    content = make(images, labels)
    raw = content if isinstance(content, bytes) else pickle.dumps(content, protocol=2)
    (tmp_path / 'pkl').mkdir()
    (tmp_path / 'pkl' / 'mnist.pkl.gz').write_bytes(gzip.compress(raw))
    with pytest.raises(DataError, match='^mnist.pkl.gz: ') as error:
        build_small(tmp_path / 'pkl', tmp_path / 'out.npz')
    assert message in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['pkl', 'raw']


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    (tmp_path / 'pkl').mkdir()
    (tmp_path / 'pkl' / 'mnist.pkl.gz').write_bytes(gzip.compress(pickle.dumps(Evil(marker))))
    with pytest.raises(DataError, match='refusing to load builtins.exec'):
        build_small(tmp_path / 'pkl', tmp_path / 'out.npz')
    assert not marker.exists()


# ---------------------------------------------------------------------------------------
# Download from a local mirror.

class MirrorHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; records requests; files named in server.cut_short stop half-way."""

    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()

    def copyfile(self, source, outputfile):
        data = source.read()
        if Path(source.name).name in self.server.cut_short:
            data = data[:len(data) // 2]  # after a Content-Length of the whole file
        outputfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path, mnist_dir):
    """(URL, folder, server) of a local HTTP server holding links to the real IDX files."""
    folder = tmp_path / 'mirror'
    folder.mkdir()
    for name in IDX_FILES:
        (folder / name).symlink_to(mnist_dir / name)
    handler = functools.partial(MirrorHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    server.requests, server.cut_short = [], set()
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05},
                              daemon=True)  # a short poll makes shutdown() quick
    thread.start()
    yield f'http://127.0.0.1:{server.server_port}/', folder, server
    server.shutdown()
    server.server_close()


def test_download_fetches_verified_files_once(mirror, mnist_dir, tmp_path):
    url, _, server = mirror
    dest = tmp_path / 'raw'
    preprocess.download(dest, url)
    for name in IDX_FILES:
        assert (dest / name).read_bytes() == (mnist_dir / name).read_bytes()
    assert sorted(server.requests) == sorted(f'/{name}' for name in IDX_FILES)
    preprocess.download(dest, url)
    assert len(server.requests) == 4  # all present and verified: nothing fetched again


def test_download_replaces_a_corrupted_local_file(mirror, mnist_dir, tmp_path):
    url, _, server = mirror
    dest = tmp_path / 'raw'
    dest.mkdir()
    (dest / TEST_LABELS).write_bytes(b'garbage')
    preprocess.download(dest, url)
    assert (dest / TEST_LABELS).read_bytes() == (mnist_dir / TEST_LABELS).read_bytes()
    assert f'/{TEST_LABELS}' in server.requests


def _truncate(path):
    path.write_bytes(path.read_bytes()[:2000])


def _corrupt(path):
    data = bytearray(path.read_bytes())
    data[1000] ^= 0x10
    path.write_bytes(bytes(data))


DOWNLOAD_PROBLEMS = {
    'truncated': (_truncate, f'{TEST_LABELS}: 2000 bytes, expected 4542'),
    'corrupted': (_corrupt, f'{TEST_LABELS}: checksum mismatch'),
    'missing': (Path.unlink, 'HTTP Error 404'),
    'cut short': (None, 'the connection closed after 2271 of 4542 bytes'),
}


@pytest.mark.parametrize('problem', DOWNLOAD_PROBLEMS)
def test_bad_download_is_reported_and_not_kept(mirror, tmp_path, problem):
    url, folder, server = mirror
    damage, message = DOWNLOAD_PROBLEMS[problem]
    served = folder / TEST_LABELS
    if damage is None:
        server.cut_short.add(TEST_LABELS)
    else:
        data = served.read_bytes()
        served.unlink()
        served.write_bytes(data)
        damage(served)
    dest = tmp_path / 'raw'
    with pytest.raises(DataError, match=f'^download from {url}{TEST_LABELS} failed: ') as error:
        preprocess.download(dest, url)
    assert message in str(error.value)
    assert not (dest / TEST_LABELS).exists() and leftovers(dest) == []


def test_download_refuses_an_unreachable_mirror(tmp_path):
    with pytest.raises(DataError, match='download from http://127.0.0.1:9/.* failed: '):
        preprocess.download(tmp_path / 'raw', 'http://127.0.0.1:9/')


def test_command_line_downloads_and_builds(mirror, tmp_path, capsys):
    url, _, _ = mirror
    out = tmp_path / 'data' / 'mnist.npz'
    code = preprocess.main(['--download', '--mirror', url, '--source', str(tmp_path / 'raw'),
                            '--output', str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert f'Wrote {out} (' in printed and 'from the four IDX files' in printed
    assert 'train 49,000 images: X (49000, 784)' in printed
    assert '  test   7,000 images' in printed
    assert {name: len(X) for name, (X, _) in preprocess.load_dataset(out).items()} == \
        {'train': 49000, 'val': 14000, 'test': 7000}


# ---------------------------------------------------------------------------------------
# Command line: --if-available, $MNIST_DIR, loading errors.

def test_if_available_without_data_says_how_to_get_it(tmp_path, capsys):
    code = preprocess.main(['--if-available', '--source', str(tmp_path / 'none'),
                            '--output', str(tmp_path / 'out.npz')])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.count('\n') == 1 and '--download' in printed and 'MNIST_DIR' in printed
    assert not (tmp_path / 'out.npz').exists()


def test_if_available_builds_then_reports_up_to_date(small, tmp_path, capsys):
    _, _, source = small
    argv = ['--if-available', '--no-verify', '--source', str(source),
            '--output', str(tmp_path / 'out.npz')]
    assert preprocess.main(argv) == 0
    assert 'Wrote ' in capsys.readouterr().out
    assert preprocess.main(argv) == 0
    assert 'is up to date (split random, seed 0' in capsys.readouterr().out


def test_if_available_with_broken_data_warns_and_exits_0(small, tmp_path, capsys):
    _, _, source = small
    (source / TRAIN_LABELS).write_bytes(b'junk')
    code = preprocess.main(['--if-available', '--no-verify', '--source', str(source),
                            '--output', str(tmp_path / 'out.npz')])
    assert code == 0
    err = capsys.readouterr().err
    assert f'{TRAIN_LABELS}: not a readable gzip file' in err and 'without training data' in err
    assert not (tmp_path / 'out.npz').exists()


def test_source_defaults_to_mnist_dir(small, tmp_path, monkeypatch, capsys):
    _, _, source = small
    monkeypatch.setenv('MNIST_DIR', str(source))
    assert preprocess.main(['--no-verify', '--output', str(tmp_path / 'out.npz')]) == 0
    assert f'in {source} (split random' in capsys.readouterr().out


def test_negative_seed_is_rejected(capsys):
    with pytest.raises(SystemExit) as exit_:
        preprocess.main(['--seed', '-1'])
    assert exit_.value.code == 2
    assert '--seed must be a non-negative integer, got -1' in capsys.readouterr().err


def test_load_dataset_explains_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='python preprocess.py'):
        preprocess.load_dataset(tmp_path / 'absent.npz')
    (tmp_path / 'model.npz').write_bytes(b'PK\x03\x04 not really')
    with pytest.raises(ValueError, match='is not a preprocessed MNIST file'):
        preprocess.load_dataset(tmp_path / 'model.npz')
    np.savez(tmp_path / 'other.npz', X_train=np.zeros((2, 784)), y_train=np.zeros(2),
             X_val=np.zeros((1, 784)), y_val=np.zeros(1), X_test=np.zeros((1, 784)),
             y_test=np.zeros(1))
    with pytest.raises(ValueError, match='train holds float64 images'):
        preprocess.load_dataset(tmp_path / 'other.npz')
