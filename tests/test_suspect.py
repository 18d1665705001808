"""Drawings that may be mislabelled (service/judge.py), near-duplicates and the per-client
limits of /samples, through real HTTP with the shipped models as judges and real MNIST digits:
poison is real 4s labelled 9, honest drawings are real digits with their own labels
(including ones the best shipped model misreads)."""
import base64
import io
import sqlite3

import cv2
import numpy as np
import pytest

import better_tensorflow as btf
from service.samples import SQLiteSampleStore, digest_of
from tests.conftest import ROOT, tiny_data

TOKEN = 'review-token'
MODELS = ROOT / 'models'
AUTH = {'Authorization': f'Bearer {TOKEN}'}


def png(x, size=56, **extra):
    """An MNIST digit as the page sends it: black ink on a white canvas, as PNG bytes."""
    big = cv2.resize(x.reshape(28, 28), (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.imencode('.png', 255 - big, [cv2.IMWRITE_PNG_COMPRESSION,
                                            extra.get('compression', 3)])[1].tobytes()


def url(data):
    return 'data:image/png;base64,' + base64.b64encode(data).decode()


@pytest.fixture(scope='module')
def digits(mnist):
    """(poison: 12 real 4s, honest: 20 real digits with their labels, misread: 5 real digits
    v7 misreads, with their true labels)."""
    _, (X, y) = mnist
    fours = np.flatnonzero(y == 4)[:12]
    honest = np.flatnonzero(y != 4)[:20]
    v7 = btf.Graph.from_file(MODELS / 'model-v7.npz')
    wrong = np.flatnonzero(v7.predict_batch(X.astype(np.float32) / 255)[0] != y)[:5]
    return ([png(X[i]) for i in fours], [(png(X[i]), int(y[i])) for i in honest],
            [(png(X[i]), int(y[i])) for i in wrong])


def keep(s, data, label, **body):
    return s.post('/samples', {'image': url(data), 'label': label, **body}, headers=AUTH)


def test_drawings_are_judged_listed_and_reviewed_by_the_token_holder(serve, digits):
    poison, honest, misread = digits
    with serve(models_dir=MODELS, token=TOKEN) as s:
        answers = [keep(s, data, 9) for data in poison]
        assert all(a.status == 201 for a in answers)
        suspect = [a.json for a in answers if a.json['suspect']]
        assert len(suspect) >= 10, [a.json for a in answers]  # real 4s labelled 9
        first = suspect[0]
        assert first['reads_as'] == 4 and first['reason'].startswith('labelled 9; reads as 4 (')
        assert first['reason'].endswith('%) to nets that never learned from it')
        for data, label in honest:
            answer = keep(s, data, label)
            assert answer.status == 201 and answer.json['suspect'] is False, answer
            assert 'reason' not in answer.json
        mistaken = [keep(s, data, label).json['suspect'] for data, label in misread]
        assert sum(mistaken) <= 1  # honest corrections the best net gets wrong mostly pass

        listed = s.get('/samples?limit=100', headers=AUTH).json
        assert listed['total'] == 37 and all('suspect' in row for row in listed['samples'])
        held = s.get('/samples?suspect=1&limit=100', headers=AUTH).json
        assert held['total'] == len(suspect)
        assert {row['id'] for row in held['samples']} == {row['id'] for row in suspect}
        assert all(row['reason'] for row in held['samples'])
        assert s.get('/samples?suspect=0', headers=AUTH).json['total'] == 37 - len(suspect)

        one, two = suspect[0]['id'], suspect[1]['id']
        refused = s.post(f'/samples/{one}/review', {'verdict': 'approve'})
        assert refused.status == 401 and 'token' in refused.json['error']
        for body, field in (({'verdict': 'yes'}, 'verdict'), ({}, 'verdict'),
                            ({'verdict': {'a': 1}}, 'verdict'), ({'verdict': [1]}, 'verdict'),
                            ({'verdict': 'approve', 'x': 1}, 'x')):
            bad = s.post(f'/samples/{one}/review', body, headers=AUTH)
            assert bad.status == 400 and field in bad.json['error'], bad
        assert s.post('/samples/999/review', {'verdict': 'reject'}, headers=AUTH).status == 404
        approved = s.post(f'/samples/{one}/review', {'verdict': 'approve'}, headers=AUTH)
        assert approved.status == 200 and approved.json['suspect'] is False
        assert approved.json['review'] == 'approved'
        honest_id = next(r['id'] for r in listed['samples'] if not r['suspect'])
        rejected = s.post(f'/samples/{honest_id}/review', {'verdict': 'reject'}, headers=AUTH)
        assert rejected.json['suspect'] is True and 'rejected' in rejected.json['reason']
        held = s.get('/samples?suspect=1&limit=100', headers=AUTH).json
        ids = {row['id'] for row in held['samples']}
        assert one not in ids and two in ids and honest_id in ids
        bad = s.get('/samples?suspect=yes', headers=AUTH)
        assert bad.status == 400 and 'suspect must be 1' in bad.json['error']
        exported = s.get('/samples/export?suspect=0', headers=AUTH)  # to merge into training
        with np.load(io.BytesIO(exported.body), allow_pickle=False) as f:
            assert len(f['ids']) == 37 - len(ids) and not set(f['ids'].tolist()) & ids


def test_a_private_net_sees_the_judgement_and_trains_on_its_drawings(serve, digits, data_file,
                                                                    tmp_path):
    poison, honest, _ = digits
    with serve(models_dir=MODELS, data_path=tiny_data(data_file, tmp_path)) as s:
        mine = s.post('/nets', {'from': 'live'}).json['net']
        answers = [s.post('/samples', {'image': url(d), 'label': 9, 'net': mine}).json
                   for d in poison[:5]]
        assert sum(a['suspect'] for a in answers) >= 4
        listed = s.get(f'/samples?net={mine}&suspect=1').json
        assert listed['total'] == sum(a['suspect'] for a in answers)
        refused = s.post(f'/samples/{answers[0]["id"]}/review', {'verdict': 'approve',
                                                                  'net': mine})
        assert refused.status == 400 and 'net' in refused.json['error']  # the live net's only
        for data, label in [h for h in honest if h[1] != 9][:2]:  # one digit alone is refused
            assert s.post('/samples', {'image': url(data), 'label': int(label),
                                       'net': mine}).status == 201
        trained = s.post('/train', {'epochs': 1, 'samples': True, 'net': mine})
        assert trained.status == 200, trained  # its owner's drawings, suspect or not
        # The shared net holds the same poison back: nothing left to train on.
        for data in poison[:5]:
            s.post('/samples', {'image': url(data), 'label': 9})
        held = s.get('/samples?suspect=1').json['total']
        assert held >= 4
        refused = s.post('/train', {'epochs': 1, 'samples': True})
        assert refused.status == 400 and f'{held} more are held back' in refused.json['error']


def test_figures_are_measured_on_drawings_not_held_back(serve, digits, data_file, tmp_path):
    poison, honest, _ = digits
    for hold in (True, False):
        with serve(models_dir=MODELS, hold_suspect=hold, state_dir=tmp_path / f'state-{hold}',
                   data_path=tiny_data(data_file, tmp_path)) as s:
            for k in range(10):  # ids 1..20 alternate: ids 5, 10, 15, 20 are held out
                s.post('/samples', {'image': url(honest[k][0]), 'label': honest[k][1]})
                s.post('/samples', {'image': url(poison[k]), 'label': 9})
            rows = s.get('/samples?limit=100').json['samples']
            held_out = [r for r in rows if r['id'] % 5 == 0]
            clean = [r for r in held_out if not r['suspect']]
            assert len(clean) < len(held_out)  # some held-out drawings are poison
            answer = s.post('/train', {'epochs': 1, 'samples': True})
            assert answer.status == 200, answer
            figures = answer.json['after']
            assert figures['samples_count'] == (len(clean) if hold else len(held_out))
            if hold:  # measured on honest drawings only: the shipped judges' copy reads them
                assert figures['samples'] >= 0.75


def test_near_duplicates_count_once(serve, digits):
    poison, honest, _ = digits
    data, label = honest[0]
    with serve(models_dir=MODELS) as s:
        first = keep(s, data, label)
        assert first.status == 201
        variants = [data + b'\0trailing bytes after IEND',
                    png_variant(data, compression=9),
                    with_text_chunk(data)]
        for variant in variants:
            assert variant != data
            again = keep(s, variant, label)
            assert again.status == 200 and again.json['id'] == first.json['id'], again
        other = keep(s, honest[1][0], honest[1][1])
        assert other.status == 201
        assert s.get('/samples').json['total'] == 2
        # the same drawing kept with a private net is that net's own sample
        mine = s.post('/nets', {'from': 'live'}).json['net']
        assert keep(s, data, label, net=mine).status == 201


def png_variant(data, compression):
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return cv2.imencode('.png', image, [cv2.IMWRITE_PNG_COMPRESSION, compression])[1].tobytes()


def with_text_chunk(data):
    """The PNG with a tEXt chunk inserted after IHDR (metadata a sender may add)."""
    import struct
    import zlib
    body = b'tEXt' + b'Comment\0made by a harness'
    chunk = struct.pack('>I', len(body) - 4) + body + struct.pack('>I', zlib.crc32(body))
    return data[:33] + chunk + data[33:]


def test_storing_is_limited_per_client_with_retry_after(serve, digits, tmp_path):
    _, honest, _ = digits
    images = [url(d) for d, _ in honest]
    with serve(models_dir=MODELS, sample_rate=0.5, sample_burst=3) as s:
        statuses = [s.post('/samples', {'image': images[k], 'label': honest[k][1]}).status
                    for k in range(4)]
        assert statuses == [201, 201, 201, 429]
        refused = s.post('/samples', {'image': images[5], 'label': honest[5][1]})
        assert refused.status == 429 and int(refused.headers['Retry-After']) >= 1
        assert '--sample-rate' in refused.json['error']
        assert s.get('/samples').json['total'] == 3
    with serve(models_dir=MODELS, samples_per_hour=2, state_dir=tmp_path / 'b') as s:
        statuses = [s.post('/samples', {'image': images[k], 'label': honest[k][1]}).status
                    for k in range(3)]
        assert statuses == [201, 201, 429]
        refused = s.post('/samples', {'image': images[4], 'label': honest[4][1]})
        assert '--samples-per-hour 2' in refused.json['error']
        assert int(refused.headers['Retry-After']) > 3000
    with serve(models_dir=MODELS, samples_per_hour=2, token=TOKEN,
               state_dir=tmp_path / 'c') as s:  # exempt
        statuses = [keep(s, d, label).status for d, label in honest[:5]]
        assert statuses == [201] * 5


def test_the_default_limits_let_a_harness_post_hundreds_at_once(serve, digits):
    _, honest, _ = digits
    image = url(honest[0][0])
    with serve() as s:  # the defaults: a burst of hundreds
        answers = [s.post('/samples', {'image': image, 'label': k % 10}).status
                   for k in range(300)]
        assert 429 not in answers


# ---------------------------------------------------------------------------------------
# The store's side, beyond tests/test_store.py's contract.

def test_an_old_sqlite_store_is_identified_by_pixels_keeping_one_of_each(tmp_path):
    """Rows kept when a sample's identity was its bytes: two posts of the same drawing (its
    bytes differed) become one; the others get their pixels' identity."""
    path = tmp_path / 'samples.sqlite3'
    db = sqlite3.connect(path)
    db.executescript(SQLiteSampleStore.SCHEMA)
    db.execute("ALTER TABLE samples ADD COLUMN net TEXT NOT NULL DEFAULT 'live'")
    db.execute('ALTER TABLE samples ADD COLUMN shared INTEGER NOT NULL DEFAULT 0')
    pixels = [bytes([k]) * 784 for k in (1, 1, 2)]
    for k, (original, p) in enumerate(zip((b'a', b'a\0', b'b'), pixels)):
        db.execute('INSERT INTO samples (sha256, label, predicted, model, pixels, original, '
                   "created) VALUES (?, 3, 3, 'live', ?, ?, '2026-01-01')",
                   (f'old-{k}', p, original))
    db.commit()
    db.close()
    store = SQLiteSampleStore(path, limit=10)
    total, rows = store.list()
    assert total == 2 and [r['id'] for r in rows] == [3, 1]
    assert all(r['judged_suspect'] is False and r['review'] is None for r in rows)
    again = store.add(b'a re-encoded', np.frombuffer(pixels[0], np.uint8), 3, 3, 'live')
    assert again[1] is False and again[0]['id'] == 1
    store.close()
    assert SQLiteSampleStore(path, limit=10).count() == 2  # done once
    assert sqlite3.connect(path).execute('SELECT sha256 FROM samples WHERE id = 3').fetchone()[
        0] == digest_of(pixels[2], 'live')


def test_an_old_database_is_identified_by_pixels_keeping_one_of_each(database):
    """PostgreSQL schema 2 to 3: the same, once, whichever server starts first."""
    import psycopg

    from service.postgres import PostgresSampleStore, migrate
    migrate(database)
    pixels = [bytes([k]) * 784 for k in (1, 1, 2)]
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute('UPDATE btf_schema SET version = 2')
        for k, (original, p) in enumerate(zip((b'a', b'a\0', b'b'), pixels)):
            conn.execute("INSERT INTO btf_samples (sha256, label, predicted, model, pixels, "
                         "original) VALUES (%s, 3, 3, 'live', %s, %s)", (f'old-{k}', p, original))
        conn.execute("INSERT INTO btf_samples (sha256, label, predicted, model, pixels, original, "
                     "net) VALUES ('old-3', 3, 3, 'live', %s, 'c', %s)", (pixels[2], 'a' * 22))
    migrate(database)
    migrate(database)  # the second finds it done
    store = PostgresSampleStore(database, limit=10)
    try:
        total, rows = store.list()
        assert total == 2 and [r['id'] for r in rows] == [3, 1]
        again = store.add(b'a re-encoded', np.frombuffer(pixels[0], np.uint8), 3, 3, 'live')
        assert again[1] is False and again[0]['id'] == 1
        mine = 'a' * 22
        assert not store.add(b'c', np.frombuffer(pixels[2], np.uint8), 3, 3, 'live', net=mine)[1]
    finally:
        store.close()
    with psycopg.connect(database) as conn:
        digests = dict(conn.execute('SELECT id, sha256 FROM btf_samples').fetchall())
    assert digests[3] == digest_of(pixels[2], 'live')
    assert digests[4] == digest_of(pixels[2], 'a' * 22)  # the database's digest is Python's


def test_after_a_training_the_drawings_it_never_saw_are_judged_again(serve, models, digits,
                                                                     data_file, tmp_path):
    """Kept while no net could judge (the test's untrained shipped models): nothing suspect.
    With the real shipped models, a training with samples judges again what its new version
    never trained on (the held-out fifth), not the drawings it learned from."""
    poison, _, _ = digits
    data = tiny_data(data_file, tmp_path)
    with serve(data_path=data) as s:  # untrained v1, v2: no judge
        for k in range(10):
            assert s.post('/samples', {'image': url(poison[k]), 'label': 9}).json['suspect'] \
                is False
    with serve(models_dir=MODELS, data_path=data) as s:
        assert s.get('/samples?suspect=1').json['total'] == 0
        assert s.post('/train', {'epochs': 1, 'samples': True}).status == 200
        held = [row['id'] for row in s.get('/samples?suspect=1').json['samples']]
        assert held == [10, 5]  # the held-out fifth; the others trained already


def test_a_net_trained_on_users_drawings_never_clears_what_the_shipped_judges_hold(mnist):
    """Poison that got into the shared net (here: a net that reads every drawing as a 9) adds
    its voice, but cannot vouch for more 4s labelled 9."""
    from service.judge import judged
    _, (X, y) = mnist
    fours = X[np.flatnonzero(y == 4)[:50]]
    shipped = [btf.Graph.from_file(MODELS / f'model-v{v}.npz') for v in (6, 7)]
    nines = btf.Graph((784, 10, 10), 0.5, 32, seed=0)
    for W in nines.weights:
        W[:] = 0
    nines.biases[-1][:] = -10
    nines.biases[-1].reshape(-1)[9] = 10
    alone = judged(shipped, [], fours, np.full(50, 9))[0]
    assert alone.sum() >= 45
    together = judged(shipped, [nines], fours, np.full(50, 9))[0]
    assert (together == alone).all()
    mean_of_all = judged(shipped + [nines], [], fours, np.full(50, 9))[0]
    assert mean_of_all.sum() == 0  # what the rule prevents: the poisoned vote clears them all
