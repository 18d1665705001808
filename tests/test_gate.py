"""The gate a training passes before it goes live (service/gate.py): the pure judgement, then
through real HTTP with a shipped trained net, MNIST's official test images and real MNIST
drawings stored with /samples: an honest training is promoted, a poisoned one is kept as a
version that is not live (the net answers exactly as before) until it is promoted on
purpose, and a private net's adaptation that reads its owner's drawings worse stays out."""
import hashlib
import json
import shutil
import threading

import numpy as np
import pytest

from service import Settings
from service.gate import judge, tolerances
from service.samples import is_validation
from tests.conftest import ROOT, read_events, wait_for
from tests.test_samples import mnist_png

SHARED = tolerances(Settings(), private=False)
PRIVATE = tolerances(Settings(), private=True)


def figures(test=0.95, per_class=(0.95,) * 10, right=None, count=0):
    return {'mnist': 0.9, 'test': test, 'test_count': 10_000,
            'test_per_class': list(per_class), 'samples_right': right,
            'samples_count': count, 'samples': None if right is None else right / count}


def test_the_judgement_counts_images_and_names_the_digit():
    same = figures()
    assert judge(same, same, SHARED)['passed']
    # 0.3 points of the 10,000 test images (30 images) may be lost, not 31.
    assert judge(same, figures(test=0.947), SHARED)['passed']
    lost = judge(same, figures(test=0.9469), SHARED)
    assert not lost['passed'] and 'test images 0.31 points worse' in lost['reason']
    assert lost['test'] == {'before': 0.95, 'after': 0.9469, 'count': 10_000,
                            'lost_points': 0.31, 'allowed_points': 0.3}
    # A net that reads every digit 99.5% right (as v7 does): one digit 3.1 points worse
    # fails, and the reason names it first; 1 point (10 of its ~1,000 images) passes.
    good = figures(test=0.995, per_class=(0.995,) * 10)
    fours = [0.995] * 10
    fours[4], fours[9] = 0.964, 0.98
    poisoned = judge(good, figures(test=0.995, per_class=fours), SHARED)
    assert not poisoned['passed'] and poisoned['classes_failed'] == [4, 9]
    assert poisoned['reason'].startswith("it reads MNIST's 4s 3.1 points worse (96.4%, was "
                                         '99.5%; at most 1 allowed; the 9s lost more')
    assert poisoned['worst_class']['digit'] == 4
    fours[4], fours[9] = 0.985, 0.995
    assert judge(good, figures(test=0.995, per_class=fours), SHARED)['passed']
    # A digit read 95% right may lose its 5 points of errors (one epoch of a small net
    # moves it by a few), not 5.1.
    assert judge(same, figures(per_class=[0.9] + [0.95] * 9), SHARED)['passed']
    weaker = judge(same, figures(per_class=[0.899] + [0.95] * 9), SHARED)
    assert not weaker['passed'] and weaker['worst_class']['allowed_points'] == 5
    # A net still learning (a fresh one) moves between digits: what the whole set gained
    # is allowed on top, so its first epoch passes.
    fresh = figures(test=0.098, per_class=[0, 0, 0, 0, 0.98, 0, 0, 0, 0, 0])
    learnt = figures(test=0.908, per_class=[0.97, 0.97, 0.9, 0.9, 0.9, 0.85, 0.95, 0.92, 0.88,
                                            0.85])
    assert judge(fresh, learnt, SHARED)['passed']
    # A private net: no check per digit, 0.5 points overall.
    assert judge(good, figures(test=0.995, per_class=[0.5] + [0.995] * 9), PRIVATE)['passed']
    assert not judge(same, figures(test=0.9449), PRIVATE)['passed']


def test_the_held_out_drawings_allow_for_noise_on_the_shared_net_only():
    # 30 held-out drawings: one drawing is 3.3 points; the shared net may lose one of them
    # (a training's noise), not two; with 1,000 of them, 1 point (10 drawings).
    assert judge(figures(right=27, count=30), figures(right=26, count=30), SHARED)['passed']
    two = judge(figures(right=27, count=30), figures(right=25, count=30), SHARED)
    assert not two['passed'] and two['samples']['allowed_drawings'] == 1
    assert 'it reads 25 of the 30 held-out drawings right (was 27' in two['reason']
    assert judge(figures(right=950, count=1000), figures(right=940, count=1000),
                 SHARED)['passed']
    assert not judge(figures(right=950, count=1000), figures(right=939, count=1000),
                     SHARED)['passed']
    # A private net: its owner's drawings, not one fewer read right.
    mine = judge(figures(right=9, count=10), figures(right=8, count=10), PRIVATE, True)
    assert not mine['passed']
    assert mine['reason'] == ('it reads 8 of your 10 held-out drawings right (was 9; not one '
                              'fewer allowed)')
    better = judge(figures(right=8, count=10), figures(right=10, count=10), PRIVATE, True)
    assert better['passed'] and 'it reads 10 of your 10 held-out drawings right (was 8)' in \
        better['reason']
    # Without the test images, only what was measured is checked, and the reason says so.
    bare = {'mnist': 0.5, 'test': None, 'test_per_class': None, 'samples_right': None,
            'samples_count': 0}
    alone = judge(bare, bare, SHARED)
    assert alone['passed'] and 'not checked' in alone['reason'] and alone['test'] is None


# ---------------------------------------------------------------------------------------
# Through HTTP.

@pytest.fixture
def shipped(tmp_path):
    """A models folder with the shipped v6 (784-800-10, 98.6% on MNIST's test images) as the
    best model, and MNIST's official test images beside it."""
    folder = tmp_path / 'shipped'
    folder.mkdir()
    for name in ('model-v6.npz', 'mnist-test.npz'):
        shutil.copy(ROOT / 'models' / name, folder / name)
    entry = next(e for e in json.loads((ROOT / 'models' / 'models.json').read_text())['models']
                 if e['version'] == 6)
    (folder / 'models.json').write_text(json.dumps({'best': 6, 'models': [entry]}))
    return folder


def unguarded(**settings):
    """Settings that let every stored drawing train the shared net: a server with the
    suspect-drawing hold-back (``hold_suspect``) would keep the poisoned ones out, and this
    test is about the gate behind it."""
    return {**settings, **({'hold_suspect': False} if 'hold_suspect' in Settings.names()
                           else {})}


def read(s, images, net=None):
    """The net's confidences for each image, as /predict answers them."""
    found = []
    for image in images:
        answer = s.post('/predict', {'image': image, **({'net': net} if net else {})})
        assert answer.status == 200, answer
        found.append([p['confidence'] for p in answer.json['predictions']])
    return np.array(found)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_honest_training_is_promoted(serve_data, shipped):
    with serve_data(models_dir=shipped) as s:
        events = {}
        listener = threading.Thread(target=lambda: events.update(read_events(s.port)[0]))
        listener.start()
        wait_for(lambda: s.app.ctx.streams.queues, 'the event stream')
        answer = s.post('/train', {'epochs': 1})
        listener.join(60)
        assert answer.status == 200, answer
        result = answer.json
        assert result['promoted'] is True and result['gate']['passed'] is True, result
        assert result['version'] == 2 and result['after']['test_count'] == 10_000
        assert len(result['after']['test_per_class']) == 10
        assert result['gate']['reason'].startswith("no worse than allowed: it reads MNIST's")
        assert result['gate']['test']['allowed_points'] == 0.3
        assert events['done']['promoted'] is True and events['done']['gate'] == result['gate']
        versions = s.get('/nets/live/versions').json
        assert versions['current'] == 2
        assert versions['versions'][-1]['promoted'] is True
        assert versions['versions'][-1]['gate'] == result['gate']
        assert s.get('/models').json['live']['version'] == 2


def test_a_poisoned_training_is_kept_not_live_until_promoted(serve_data, shipped, mnist,
                                                             tmp_path):
    """60 real MNIST 4s stored labelled 9, and trained on as half of every epoch: MNIST's 4s
    are read far worse, so the candidate stays out and the live net answers as before."""
    (X, y), (X_test, y_test) = mnist
    probes = [mnist_png(X_test[k]) for k in range(12)]  # a few test digits, 4s among them
    with serve_data(**unguarded(models_dir=shipped, sample_share=0.5)) as s:
        for x in X[y == 4][:60]:
            assert s.post('/samples', {'image': mnist_png(x), 'label': 9}).status == 201
        before = read(s, probes)
        models = s.get('/models').json
        files = {n: digest(tmp_path / 'state' / n) for n in ('live.npz', 'live.json')}

        answer = s.post('/train', {'epochs': 1, 'samples': True})
        assert answer.status == 200, answer
        result = answer.json
        assert result['promoted'] is False and result['gate']['passed'] is False
        assert result['gate']['reason'].startswith("it reads MNIST's 4s "), result['gate']
        assert result['gate']['classes_failed'][0] == 4
        assert result['after']['test_per_class'][4] < result['before']['test_per_class'][4] - 0.01
        # (12 held out; drawings judged suspect may be left out of the figures)
        assert result['version'] == 2 and result['after']['samples_count'] <= 12
        # Nothing live changed: the answers, /models, the live net's files.
        np.testing.assert_array_equal(read(s, probes), before)
        assert s.get('/models').json == models
        assert {n: digest(tmp_path / 'state' / n) for n in files} == files
        status = s.get('/train/status').json
        assert status['state'] == 'done'
        versions = s.get('/nets/live/versions').json
        assert versions['current'] == 1 and [v['version'] for v in versions['versions']] == [1, 2]
        candidate = versions['versions'][1]
        assert candidate['promoted'] is False and candidate['gate'] == result['gate']

        # Only a candidate can be promoted; promoting it is guarded like a rollback.
        assert s.post('/nets/live/promote', {'version': 1}).status == 409
        assert s.post('/nets/live/promote', {'version': 9}).status == 404
        assert s.post('/nets/live/promote', {'version': 'two'}).status == 400
        refused = s.post('/nets/live/promote', {'version': 2},
                         headers={'Origin': 'https://elsewhere.example'})
        assert refused.status == 403 and s.get('/nets/live/versions').json['current'] == 1
        promoted = s.post('/nets/live/promote', {'version': 2})
        assert promoted.status == 200, promoted
        assert promoted.json['version'] == 3 and promoted.json['promoted_from'] == 2
        after = read(s, probes)
        assert not np.allclose(after, before, atol=1e-4)
        assert s.get('/models').json['live']['version'] == 3
        listed = s.get('/nets/live/versions').json
        assert listed['current'] == 3 and listed['versions'][-1]['cause'] == 'promote'
        # Rollback still brings back any kept version: here the one before the poison.
        assert s.post('/nets/live/rollback', {'version': 1}).status == 200
        np.testing.assert_array_equal(read(s, probes), before)


def test_a_private_adaptation_that_reads_its_owners_drawings_worse_stays_out(
        serve_data, shipped, mnist):
    """A private net's held-out drawings are its owner's 4s labelled 4; the others, 4s
    labelled 9, teach it to read them as 9s: the adapted net is kept, not current. MNIST's
    test images are let through (100 points) so that the drawings alone decide."""
    (X, y), _ = mnist
    with serve_data(models_dir=shipped, sample_share=0.5, gate_private_test_points=100.0) as s:
        name = s.post('/nets', {'from': 'live'}).json['net']
        fours, next_id = iter(X[y == 4]), 1
        held = 0
        while held < 8:
            label = 4 if is_validation([next_id])[0] else 9
            made = s.post('/samples', {'image': mnist_png(next(fours)), 'label': label,
                                       'net': name})
            assert made.status == 201 and made.json['id'] == next_id
            held += label == 4
            next_id += 1
        before = read(s, [mnist_png(x) for x in X[y == 4][:5]], name)
        answer = s.post('/train', {'epochs': 1, 'samples': True, 'net': name})
        assert answer.status == 200, answer
        result = answer.json
        assert result['promoted'] is False, result['gate']
        assert result['after']['samples_count'] == 8
        assert result['after']['samples_right'] < result['before']['samples_right']
        assert 'of your 8 held-out drawings right' in result['gate']['reason']
        assert result['gate']['tolerances']['class_points'] is None
        np.testing.assert_array_equal(read(s, [mnist_png(x) for x in X[y == 4][:5]], name),
                                      before)
        versions = s.get(f'/nets/{name}/versions').json
        assert versions['current'] == 1 and versions['versions'][-1]['promoted'] is False
        # The live net was not touched by its private net's training.
        assert s.get('/nets/live/versions').json['current'] == 1


def test_the_tolerances_are_flags_and_bad_ones_are_refused(capsys):
    import server
    settings = server.parse(['--gate-test-points', '0.5', '--gate-class-points', '2',
                             '--gate-samples-points', '3', '--gate-private-test-points', '1',
                             '--gate-private-drawings', '2'], environ={})
    assert tolerances(settings, private=False) == {
        'test_points': 0.5, 'class_points': 2.0, 'samples_points': 3.0, 'samples_drawings': 1}
    assert tolerances(settings, private=True) == {
        'test_points': 1.0, 'class_points': None, 'samples_points': 0.0, 'samples_drawings': 2}
    for bad in ({'gate_test_points': -0.1}, {'gate_class_points': 'one'},
                {'gate_private_drawings': -1}, {'gate_private_drawings': 0.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Settings(**bad)
    with pytest.raises(SystemExit):
        server.parse(['--gate-samples-points', '101'], environ={})
    assert 'gate_samples_points must be a number of points from 0 to 100' in \
        capsys.readouterr().err
