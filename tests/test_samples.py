"""Learning from users: /samples through real HTTP (SQLite in the state folder), restarts,
several workers, kill -9 during inserts, and training on MNIST plus the samples."""
import base64
import io
import json
import random
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

import imaging
from service import trainer
from tests.conftest import DIGIT, Process, png_b64, tiny_data, wait_for

TOKEN = 'sample-token'


def stroke(k, size=56):
    """A distinct small drawing per k (k < 1000: distinct as the net sees them, after its
    centring): a slanted bar and a dot, as the page sends (56x56 PNG)."""
    image = np.zeros((size, size, 4), np.uint8)
    cv2.line(image, (20 + k % 17, 8), (36 - k % 13, 48), (0, 0, 0, 255), 4 + k % 3,
             cv2.LINE_AA)
    cv2.circle(image, (4 + k % 48, 4 + (k // 48) % 48), 2, (0, 0, 0, 255), -1, cv2.LINE_AA)
    return png_b64(image)


def count(s):
    return s.get('/samples').json['total']


def test_store_list_read_export_and_delete(serve):
    with serve() as s:
        first = s.post('/samples', {'image': DIGIT, 'label': 4})
        assert first.status == 201, first
        live = s.post('/predict', {'image': DIGIT}).json['label']
        assert first.json == {'id': 1, 'label': 4, 'predicted': live, 'model': 'live',
                              'shared': False, 'suspect': False, 'review': None}
        again = s.post('/samples', {'image': DIGIT, 'label': 9})  # the same drawing
        assert again.status == 200 and again.json['id'] == 1 and again.json['label'] == 4
        second = s.post('/samples', {'image': stroke(1), 'label': 1, 'pretrained': 1})
        assert second.status == 201 and second.json['model'] == 'v1'

        listed = s.get('/samples').json
        assert listed['total'] == 2 and [r['id'] for r in listed['samples']] == [2, 1]
        assert set(listed['samples'][0]) == {'id', 'label', 'predicted', 'model', 'created',
                                          'shared', 'suspect', 'review'}
        assert s.get('/samples?label=4').json['total'] == 1
        assert [r['id'] for r in s.get('/samples?offset=1&limit=1').json['samples']] == [1]

        image = s.get('/samples/1/image')
        assert image.status == 200 and image.headers['Content-Type'] == 'image/png'
        seen = cv2.imdecode(np.frombuffer(image.body, np.uint8), cv2.IMREAD_UNCHANGED)
        assert seen.shape == (28, 28)
        np.testing.assert_array_equal(seen, np.rint(imaging.prepare(DIGIT) * 255))
        original = s.get('/samples/1/image?original=1')
        assert original.body == imaging.decode_base64(DIGIT)

        exported = s.get('/samples/export')
        assert exported.status == 200
        with np.load(io.BytesIO(exported.body), allow_pickle=False) as f:
            assert f['X'].shape == (2, 784) and f['X'].dtype == np.uint8
            assert f['y'].tolist() == [4, 1] and f['ids'].tolist() == [1, 2]
            np.testing.assert_array_equal(f['X'][0], seen.reshape(-1))

        deleted = s.call('DELETE', '/samples/1')
        assert deleted.status == 204 and deleted.body == b''
        gone = s.call('DELETE', '/samples/1')
        assert gone.status == 404 and gone.json == {
            'error': 'there is no sample 1 (GET /samples lists them).'}
        assert s.get('/samples/1/image').status == 404
        assert count(s) == 1


BAD_SAMPLES = [
    ({'image': DIGIT}, 400, 'label must be an integer from 0 to 9'),
    *[({'image': DIGIT, 'label': v}, 400, 'label must be an integer from 0 to 9')
      for v in (10, -1, 1.0, '1', True, None, [1])],
    ({'label': 3}, 400, 'image must be a string'),
    ({'image': '', 'label': 3}, 400, 'the image is empty'),
    ({'image': png_b64(np.full((40, 40), 255, np.uint8)), 'label': 3}, 422, 'no digit found'),
    ({'image': png_b64(np.zeros((4000, 4500), np.uint8)), 'label': 3}, 413, 'pixels'),
    ({'image': DIGIT, 'label': 3, 'colour': 'red'}, 400, 'unknown field'),
    ({'image': DIGIT, 'label': 3, 'pretrained': 7}, 400, 'pretrained must be one of'),
]


def test_bad_samples_are_a_clear_4xx_and_store_nothing(serve):
    noise = np.random.default_rng(0).integers(0, 256, (400, 400), np.uint8)
    big = png_b64(noise)  # a real drawing of ~160 KB: over a sample's size limit
    with serve(max_sample_bytes=100_000) as s:
        for body, status, message in [*BAD_SAMPLES, ({'image': big, 'label': 3}, 413,
                                                     'at most 100000 bytes')]:
            answer = s.post('/samples', body)
            assert answer.status == status, (str(body)[:80], answer)
            assert message in answer.json['error'], answer
        for path, status in (('/samples?label=10', 400), ('/samples?limit=0', 400),
                             ('/samples?limit=501', 400), ('/samples?offset=-1', 400),
                             ('/samples/1/image?original=2', 400), ('/samples/0/image', 404),
                             ('/samples/99999999999999999999/image', 404)):
            assert s.get(path).status == status, path
        text = s.post('/samples', json.dumps({'image': DIGIT, 'label': 3}),
                      headers={'Content-Type': 'text/plain'})
        assert text.status == 415
        assert count(s) == 0


def test_a_full_store_is_507_and_keeps_what_it_has(serve):
    with serve(max_samples=3) as s:
        for k in range(3):
            assert s.post('/samples', {'image': stroke(k), 'label': k}).status == 201
        full = s.post('/samples', {'image': stroke(3), 'label': 3})
        assert full.status == 507
        assert 'holds 3 samples' in full.json['error'] and '--max-samples' in full.json['error']
        assert s.post('/samples', {'image': stroke(0), 'label': 0}).status == 200  # known
        assert count(s) == 3
        assert s.call('DELETE', '/samples/2').status == 204
        assert s.post('/samples', {'image': stroke(3), 'label': 3}).status == 201


def test_every_samples_route_needs_the_token_and_refuses_other_sites(serve):
    routes = [('GET', '/samples', None), ('POST', '/samples', {'image': DIGIT, 'label': 4}),
              ('GET', '/samples/1/image', None), ('GET', '/samples/export', None),
              ('DELETE', '/samples/1', None)]
    with serve(token=TOKEN) as s:
        for method, path, body in routes:
            answer = s.call(method, path, body)
            assert answer.status == 401, (method, path, answer)
            assert "holds users' drawings and needs the server's token" in answer.json['error']
        bearer = {'Authorization': f'Bearer {TOKEN}'}
        assert s.post('/samples', {'image': DIGIT, 'label': 4}, headers=bearer).status == 201
        assert s.get(f'/samples?token={TOKEN}').json['total'] == 1
    with serve() as s:  # no token: other sites are refused, the page and curl are not
        for method, path, body in routes:
            for headers in ({'Origin': 'https://evil.example'}, {'Sec-Fetch-Site': 'cross-site'}):
                answer = s.call(method, path, body, headers=headers)
                assert answer.status == 403, (method, path, headers, answer)
        own = {'Origin': f'http://127.0.0.1:{s.port}', 'Sec-Fetch-Site': 'same-origin'}
        assert s.get('/samples', headers=own).json['total'] == 1


def test_samples_survive_restarts_and_every_worker_sees_them_at_once(serve):
    with serve() as a, serve() as b:  # two workers on one state folder
        for k in range(6):
            writer, reader = (a, b) if k % 2 else (b, a)
            made = writer.post('/samples', {'image': stroke(k), 'label': k % 10}).json['id']
            assert reader.get('/samples').json['samples'][0]['id'] == made
        assert reader.call('DELETE', f'/samples/{made}').status == 204
        assert writer.get(f'/samples/{made}/image').status == 404
        before = a.get('/samples').json
    with serve() as s:
        assert s.get('/samples').json == before
        db = sqlite3.connect(s.state / 'samples.sqlite3')
        assert db.execute('PRAGMA journal_mode').fetchone() == ('wal',)


def test_kill_9_during_inserts_leaves_whole_rows(tmp_path, models):
    folder, _ = models
    args = ('--models', str(folder), '--workers', '2')
    answered = set()
    with Process(tmp_path, *args) as s, ThreadPoolExecutor(4) as pool:
        def post(k):
            answer = s.post('/samples', {'image': stroke(k), 'label': k % 10}, timeout=10)
            if answer.status == 201:
                answered.add(answer.json['id'])

        futures = [pool.submit(post, k) for k in range(400)]
        wait_for(lambda: len(answered) >= 20, 'some samples')
        time.sleep(random.uniform(0.05, 0.3))
        s.kill()
        for future in futures:
            try:
                future.result(timeout=30)
            except OSError:
                pass
    db = sqlite3.connect(tmp_path / 'state' / 'samples.sqlite3')
    assert db.execute('PRAGMA integrity_check').fetchone() == ('ok',)
    rows = db.execute('SELECT id, length(pixels), length(original) FROM samples').fetchall()
    assert answered <= {r[0] for r in rows}  # nothing answered was lost
    assert all(n == 784 and m > 0 for _, n, m in rows)
    with Process(tmp_path, *args) as s:  # and the server starts on it
        assert s.get('/samples').json['total'] == len(rows)
        assert s.post('/samples', {'image': stroke(999), 'label': 9}).status == 201


def mnist_png(x):
    """An MNIST image as the page would send it: black ink on a white 56x56 canvas."""
    big = cv2.resize(x.reshape(28, 28), (56, 56), interpolation=cv2.INTER_LINEAR)
    return 'data:image/png;base64,' + base64.b64encode(
        cv2.imencode('.png', 255 - big)[1]).decode()


def test_training_with_samples_reports_before_and_after(serve, tmp_path, data_file, mnist):
    _, (X_test, y_test) = mnist
    with serve(data_path=tiny_data(data_file, tmp_path, rows=600)) as s:
        none = s.post('/train', {'epochs': 1, 'samples': True})
        assert none.status == 400 and 'POST /samples' in none.json['error']
        for k in range(25):  # 5 of them (ids 5, 10, ...) are held out
            made = s.post('/samples', {'image': mnist_png(X_test[k]), 'label': int(y_test[k])})
            assert made.status == 201
        for query in ('samples=2', 'samples=yes'):
            assert s.get(f'/train?{query}').status == 400
        assert s.post('/train', {'samples': 1}).status == 400
        answer = s.post('/train', {'epochs': 2, 'samples': True})
        assert answer.status == 200, answer
        result = answer.json
        assert result['samples'] is True and result['epochs'] == 2
        for figures in (result['before'], result['after']):
            assert set(figures) == {'mnist', 'samples', 'samples_count', 'samples_right',
                                    'test', 'test_per_class', 'test_count'}
            assert figures['samples_count'] == 5 and 0 <= figures['samples'] <= 1
            assert figures['samples_right'] == round(5 * figures['samples'])
            assert figures['test'] is None  # the test's models folder has no test images
        assert result['after']['mnist'] == result['validation_accuracy']
        assert result['after']['mnist'] > result['before']['mnist']  # the untrained v2 learns
        status = s.get('/train/status').json
        assert (status['before'], status['after']) == (result['before'], result['after'])
        # not MNIST epochs: a fixed number of batches on a mix (trainer.SHARED) per epoch
        assert status['batches'] == trainer.SHARED.steps
        plain = s.post('/train', {'epochs': 1}).json
        assert plain['samples'] is False and plain['before']['samples'] is None


def test_an_export_merges_into_the_training_file(serve, data_file, mnist_dir, tmp_path, capsys):
    """`preprocess.py --merge-samples`: the export's drawings join the training split (the
    held-out fifth stays out), once; the other splits, and a later plain build, keep them."""
    import preprocess
    with serve() as s:
        for k in range(7):  # ids 1..7: 5 is held out
            assert s.post('/samples', {'image': stroke(k), 'label': k}).status == 201
        export = tmp_path / 'samples.npz'
        export.write_bytes(s.get('/samples/export').body)
        with np.load(export, allow_pickle=False) as f:
            drawn = dict(zip(f['ids'].tolist(), f['X']))
    data = tiny_data(data_file, tmp_path, rows=300)
    before = preprocess.load_dataset(data)

    assert preprocess.main(['--merge-samples', str(export), '--output', str(data)]) == 0
    assert 'Added 6 drawings' in capsys.readouterr().out
    after = preprocess.load_dataset(data)
    X, y = after['train']
    assert len(X) == len(before['train'][0]) + 6
    assert y[-6:].tolist() == [0, 1, 2, 3, 5, 6]  # labels k of ids 1-4, 6, 7
    np.testing.assert_array_equal(X[-1], drawn[7] / np.float32(255))
    for name in ('val', 'test'):
        np.testing.assert_array_equal(after[name][0], before[name][0])
    with np.load(data, allow_pickle=False) as f:
        assert f['index_train'][-6:].tolist() == [-1, -2, -3, -4, -6, -7]
        assert json.loads(str(f['meta']))['samples']['ids'] == [1, 2, 3, 4, 6, 7]

    again = preprocess.merge_samples(export, data)  # the same export: nothing twice
    assert (again['added'], again['held_out'], again['already']) == (0, 1, 6)
    assert len(preprocess.load_dataset(data)['train'][0]) == len(X)
    report = preprocess.build(mnist_dir, data)  # up to date: the merged drawings stay
    assert report['written'] == [] and len(preprocess.load_dataset(data)['train'][0]) == len(X)


def test_a_bad_export_is_refused_naming_what_is_wrong(data_file, tmp_path, capsys):
    import preprocess
    data = tiny_data(data_file, tmp_path, rows=50)
    original = data.read_bytes()
    cases = {'not-npz.npz': b'hello',
             'label.npz': dict(ids=np.array([1]), X=np.zeros((1, 784), np.uint8), y=np.array([12])),
             'shape.npz': dict(ids=np.array([1]), X=np.zeros((1, 28, 28), np.uint8),
                               y=np.array([1])),
             'twice.npz': dict(ids=np.array([3, 3]), X=np.zeros((2, 784), np.uint8),
                               y=np.array([1, 2]))}
    expected = {'not-npz.npz': 'is not a samples export', 'label.npz': 'label 12 is not a digit',
                'shape.npz': 'a samples export holds X uint8 (n, 784)',
                'twice.npz': 'a sample id occurs twice'}
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            np.savez(path, **content)
        assert preprocess.main(['--merge-samples', str(path), '--output', str(data)]) == 1
        assert expected[name] in capsys.readouterr().err, name
        assert data.read_bytes() == original
    good = tmp_path / 'good.npz'
    np.savez(good, ids=np.array([1]), X=np.zeros((1, 784), np.uint8), y=np.array([1]))
    missing = preprocess.main(['--merge-samples', str(good), '--output',
                               str(tmp_path / 'nowhere.npz')])
    assert missing == 1 and 'build it first' in capsys.readouterr().err
