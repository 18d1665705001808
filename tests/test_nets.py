"""Many nets (routes/nets.py, nets.Registry, the training queue) through real HTTP: a net of
one's own, its versions and rollback, the name as its key, drawings per net, the queue, the
limits. The PostgreSQL side (several servers on one database) is in test_database.py."""
import sys
import threading
import time

import cv2
import numpy as np
import pytest

import better_tensorflow as btf
from service.store import is_net_name
from tests.conftest import (
    DIGIT,
    Process,
    confidences,
    drawn_digit,
    png_b64,
    predict_locally,
    tiny_data,
    wait_for,
)

TOKEN = 'nets-T0ken-3e1f'
BAD_NAMES = ['nope', 'a' * 21, 'a' * 23, '..%2F..%2Fetc', 'LIVE', 'x' * 300]


def make(s, source='live', **headers):
    answer = s.post('/nets', {'from': source}, headers=headers or None)
    assert answer.status == 201, answer
    return answer.json


def read(s, net=None, **extra):
    body = {'image': DIGIT, **({'net': net} if net else {}), **extra}
    answer = s.post('/predict', body)
    assert answer.status == 200, answer
    return confidences(answer.json)


def test_a_net_of_ones_own(serve, models):
    _, nets = models
    with serve() as s:
        made = make(s)
        name = made['net']
        assert is_net_name(name) and len(name) == 22 and name != 'live'
        assert made['sizes'] == [784, 30, 10] and made['version'] == 1 and made['from'] == 'live'
        assert make(s)['net'] != name  # every net its own name
        # It answers as the net it was made from, until it changes.
        np.testing.assert_array_equal(read(s, name), read(s))
        fresh = make(s, 'fresh')['net']
        assert s.post('/predict', {'image': DIGIT, 'net': fresh}).json['model'] == fresh
        shipped = make(s, 1)
        assert shipped['sizes'] == [784, 20, 10] and shipped['from'] == 'v1'
        np.testing.assert_allclose(read(s, shipped['net']), predict_locally(nets[1]),
                                   rtol=1e-5)
        # Changing it leaves the live net alone, and the other way round.
        live_before = read(s)
        assert s.post('/reset', {'net': name}).status == 200
        assert not np.allclose(read(s, name), live_before, atol=1e-4)
        np.testing.assert_array_equal(read(s), live_before)
        assert s.get(f'/pretrain?net={fresh}').status == 200
        np.testing.assert_array_equal(read(s, fresh), read(s, pretrained=2))
        described = s.get(f'/nets/{name}').json
        assert described['net'] == name and described['version'] == 2
        assert described['from'] == 'live' and described['drawings'] == 0
        assert described['training'] == 'idle' and described['created']
        # Every route that reads a net takes its name.
        assert s.get(f'/model/hidden?net={name}').json['model'] == name
        assert s.get(f'/train/status?net={name}').json['running'] is False
        compared = s.post('/compare', {'image': DIGIT, 'net': name}).json['models']
        assert compared[0]['model'] == name
        # Deleted, it is gone everywhere; the live net cannot be.
        assert s.call('DELETE', f'/nets/{name}').status == 204
        for path in (f'/nets/{name}', f'/train/status?net={name}', f'/model/hidden?net={name}'):
            gone = s.get(path)
            assert gone.status == 404 and 'no net named' in gone.json['error'], path
        assert s.post('/predict', {'image': DIGIT, 'net': name}).status == 404
        assert s.call('DELETE', f'/nets/{name}').status == 404
        live = s.call('DELETE', '/nets/live')
        assert live.status == 409 and 'cannot be deleted' in live.json['error']


def test_versions_and_rollback(serve_data, data_file, tmp_path):
    with serve_data(data_path=tiny_data(data_file, tmp_path), max_versions=3) as s:
        name = make(s)['net']
        first = read(s, name)
        trained = s.post('/train', {'epochs': 1, 'net': name})
        assert trained.status == 200 and trained.json['version'] == 2
        after = read(s, name)
        assert not np.allclose(after, first, atol=1e-5)
        listed = s.get(f'/nets/{name}/versions').json
        assert listed['current'] == 2
        assert [(v['version'], v['cause']) for v in listed['versions']] == [(1, 'create'),
                                                                              (2, 'train')]
        assert listed['versions'][1]['epochs'] == 1
        assert listed['versions'][1]['validation_accuracy'] == trained.json[
            'validation_accuracy']
        back = s.post(f'/nets/{name}/rollback', {'version': 1})
        assert back.status == 200 and back.json['version'] == 3
        assert back.json['rolled_back_to'] == 1 and back.json['epochs'] == 0
        np.testing.assert_array_equal(read(s, name), first)  # exactly as version 1
        assert s.post('/reset', {'net': name}).status == 200  # version 4: 1 is pruned
        kept = s.get(f'/nets/{name}/versions').json
        assert [v['version'] for v in kept['versions']] == [2, 3, 4] and kept['current'] == 4
        pruned = s.post(f'/nets/{name}/rollback', {'version': 1})
        assert pruned.status == 404 and '[2, 3, 4]' in pruned.json['error']
        for bad in ({'version': 0}, {'version': '2'}, {'version': True}, {}, {'v': 2}):
            assert s.post(f'/nets/{name}/rollback', bad).status == 400, bad
        # The live net has versions too, and the way back.
        live = read(s)
        assert s.post('/reset').status == 200
        assert s.post('/nets/live/rollback', {'version': 1}).status == 200
        np.testing.assert_array_equal(read(s), live)
        # A new server on the same state answers with the newest version.
    with serve_data(data_path=tiny_data(data_file, tmp_path), max_versions=3) as again:
        np.testing.assert_array_equal(read(again), live)
        assert again.get(f'/nets/{name}/versions').json['current'] == 4


def test_unknown_and_malformed_names_are_404_and_reach_no_file(serve, tmp_path):
    with serve() as s:
        for name in BAD_NAMES + ['A' * 22]:  # well formed but never made
            for method, path, body in (
                    ('POST', '/predict', {'image': DIGIT, 'net': name}),
                    ('GET', f'/train/status?net={name}', None),
                    ('GET', f'/samples?net={name}', None),
                    ('POST', '/reset', {'net': name}),
                    ('GET', f'/nets/{name}', None),
                    ('GET', f'/nets/{name}/versions', None),
                    ('POST', f'/nets/{name}/rollback', {'version': 1})):
                answer = s.call(method, path, body)
                assert answer.status == 404 and 'error' in answer.json, (method, path, answer)
        for bad in (3, None, ['live'], {'a': 1}):
            answer = s.post('/predict', {'image': DIGIT, 'net': bad})
            assert answer.status == 400 and 'net must be' in answer.json['error'], bad
        assert not (tmp_path / 'state' / 'nets').exists() or \
            not list((tmp_path / 'state' / 'nets').iterdir())
        for source in ('Live', 99, -1, None, [1], True, 'v1'):
            answer = s.post('/nets', {'from': source})
            assert answer.status == 400 and 'from must be' in answer.json['error'], source
        assert s.post('/nets', {'from': 'live', 'x': 1}).status == 400


def test_the_name_is_the_key_the_token_guards_the_rest(tmp_path, models):
    folder, _ = models
    auth = {'Authorization': f'Bearer {TOKEN}'}
    with Process(tmp_path, '--models', str(folder), env={'BTF_TOKEN': TOKEN}) as s:
        name = make(s)['net']  # no token needed to make one's own net
        assert s.post('/reset', {'net': name}).status == 200  # nor to change it
        assert s.post('/reset').status == 401  # the live net needs it
        assert s.get('/nets').status == 401  # the operator's list too
        listed = s.get('/nets', headers=auth).json
        assert listed['total'] == 1 and listed['nets'][0]['net'] == name
        # A page on another site may not change a net, even knowing its name.
        for headers in ({'Origin': 'https://evil.example'}, {'Sec-Fetch-Site': 'cross-site'}):
            assert s.post('/reset', {'net': name}, headers=headers).status == 403
            assert s.post('/nets', {}, headers=headers).status == 403
            assert s.call('DELETE', f'/nets/{name}', headers=headers).status == 403
            assert s.post('/reset', {'net': name}, headers={**headers, **auth}).status == 200
        assert s.post('/reset', f'{{"net": "{name}"}}',
                      headers={'Content-Type': 'text/plain'}).status == 415
        # Private nets are never listed publicly.
        for path in ('/models', '/openapi.json', '/train/status', '/nets/live'):
            assert name not in s.get(path).body.decode(), path


def test_drawings_belong_to_their_net(serve):
    with serve() as s:
        mine = make(s)['net']
        kept = s.post('/samples', {'image': DIGIT, 'label': 4, 'net': mine})
        assert kept.status == 201 and kept.json['shared'] is False
        assert s.get('/samples').json['total'] == 0  # private: not the live net's
        assert s.get(f'/samples?net={mine}').json['total'] == 1
        sample = kept.json['id']
        assert s.get(f'/samples/{sample}/image').status == 404
        assert s.get(f'/samples/{sample}/image?net={mine}').status == 200
        assert s.get(f'/nets/{mine}').json['drawings'] == 1
        shared = s.post(f'/samples/{sample}/share', {'net': mine, 'share': True})
        assert shared.status == 200 and shared.json == {'id': sample, 'shared': True}
        assert [r['id'] for r in s.get('/samples').json['samples']] == [sample]
        other = make(s)['net']  # another net cannot share or delete it
        assert s.post(f'/samples/{sample}/share', {'net': other, 'share': False}).status == 404
        assert s.call('DELETE', f'/samples/{sample}?net={other}').status == 404
        both = s.post('/samples', {'image': DIGIT, 'label': 4, 'net': mine, 'share': True})
        assert both.status == 200 and both.json['id'] == sample  # the same drawing
        assert s.post('/samples', {'image': DIGIT, 'label': 4, 'share': 'yes'}).status == 400
        assert s.call('DELETE', f'/nets/{mine}').status == 204  # its drawings go with it
        assert s.get('/samples').json['total'] == 0


def test_trainings_queue_in_order_one_per_net(serve_data, data_file, tmp_path):
    data = tiny_data(data_file, tmp_path, rows=3000)
    with serve_data(data_path=data, max_trainings=1, max_queued=2) as s:
        first, second, third = (make(s)['net'] for _ in range(3))
        answers = {}

        def train(name, epochs):
            answers[name] = s.post('/train', {'epochs': epochs, 'net': name})
        threads = [threading.Thread(target=train, args=(first, 30))]
        threads[0].start()
        wait_for(lambda: s.get(f'/train/status?net={first}').json['running'], 'a training')
        threads.append(threading.Thread(target=train, args=(second, 1)))
        threads[1].start()
        wait_for(lambda: s.get(f'/train/status?net={second}').json['state'] == 'queued',
                 'the second to queue')
        waiting = s.get(f'/train/status?net={second}').json
        assert waiting['running'] is False and waiting['position'] == 1
        again = s.post('/train', {'epochs': 1, 'net': second})
        assert again.status == 409 and 'waits in the queue' in again.json['error']
        busy = s.post('/train', {'epochs': 1, 'net': first})
        assert busy.status == 409 and 'training runs' in busy.json['error']
        threads.append(threading.Thread(target=train, args=(third, 1)))
        threads[2].start()
        wait_for(lambda: s.get(f'/train/status?net={third}').json.get('position') == 2,
                 'the third to queue behind it')
        full = s.post('/train', {'epochs': 1})  # the live net: a third waiting job
        assert full.status == 503 and 'queues' in full.json['error']
        assert full.headers['Retry-After']
        for thread in threads:
            thread.join(300)
        assert [answers[n].status for n in (first, second, third)] == [200, 200, 200]
        assert answers[first].json['epochs'] == 30 and answers[second].json['epochs'] == 1
        assert s.get(f'/train/status?net={second}').json['state'] == 'done'


def test_limits_on_nets(serve, tmp_path, models):
    with serve(max_nets=2) as s:
        make(s)
        make(s)
        full = s.post('/nets', {})
        assert full.status == 507 and '--max-nets' in full.json['error']
    folder, _ = models
    with Process(tmp_path, '--models', str(folder), '--nets-per-hour', '2',
                 '--state', str(tmp_path / 'other')) as s:
        make(s)
        make(s)
        third = s.post('/nets', {})
        assert third.status == 429 and '--nets-per-hour 2' in third.json['error']
        assert 0 < int(third.headers['Retry-After']) <= 3600


_opened = []  # the files opened while a test counts them (an audit hook cannot be removed)
sys.addaudithook(lambda event, args: _opened and event == 'open' and _opened.append(args[0]))


def test_making_a_net_reads_no_other_net(serve):
    """POST /nets checks --max-nets without reading every stored net: its work does not
    grow with their number (counted in files opened, not timed)."""
    def opened_by_a_new_net():
        _opened.append('start')
        try:
            make(s, 'fresh')
            return len(_opened) - 1
        finally:
            _opened.clear()

    with serve(nets_per_hour=1000) as s:
        first = opened_by_a_new_net()
        for _ in range(40):
            make(s, 'fresh')
        assert opened_by_a_new_net() < first + 20  # reading each net's files: 80 more


def test_least_recently_used_nets_are_unloaded_and_come_back(serve):
    with serve(net_memory=1) as s:  # bytes: only the newest private net stays loaded
        names = [make(s, 'fresh')['net'] for _ in range(3)]
        answers = {n: read(s, n) for n in names}
        loaded = set(s.app.ctx.nets.nets)
        assert loaded == {'live', names[-1]}
        for name in names:  # unloaded ones are read again from the store
            np.testing.assert_array_equal(read(s, name), answers[name])


def test_idle_nets_expire(serve):
    with serve() as s:
        kept, idle = make(s)['net'], make(s)['net']
    with serve(net_idle_days=2 / 86400) as s:  # two seconds
        time.sleep(2.5)
        read(s, kept)  # used: its idle time starts again
    with serve(net_idle_days=2 / 86400) as s:
        wait_for(lambda: s.get(f'/nets/{idle}').status == 404, 'the idle net to go')
        assert s.get(f'/nets/{kept}').status == 200


@pytest.mark.parametrize('source', ['live', 'fresh'])
def test_a_private_net_trains_on_its_own_drawings(serve_data, data_file, tmp_path, source):
    with serve_data(data_path=tiny_data(data_file, tmp_path)) as s:
        name = make(s, source)['net']
        none = s.post('/train', {'epochs': 1, 'samples': True, 'net': name})
        assert none.status == 400 and 'samples' in none.json['error']
        for k in range(6):  # six different drawings, said to be 4s and 7s (two digits: one
            image = drawn_digit()  # alone is refused, see test_adapt.py)
            cv2.circle(image, (30 + 40 * k, 260), 6, (0, 0, 0, 255), -1)
            assert s.post('/samples', {'image': png_b64(image), 'label': 4 if k < 3 else 7,
                                       'net': name}).status == 201
        trained = s.post('/train', {'epochs': 1, 'samples': True, 'net': name})
        assert trained.status == 200 and trained.json['samples'] is True
        home = tmp_path / 'state' / 'nets' / name
        saved = btf.Graph.from_file(home / 'versions' / f'{trained.json["version"]:06d}.npz')
        assert saved.epochs == trained.json['epochs']
        # Current only if it passed the gate (an untrained net may read the held-out drawing
        # right by chance, and three batches later not: then it is kept, not current).
        current = btf.Graph.from_file(home / 'net.npz')
        assert (current.epochs == saved.epochs) == trained.json['promoted']


def test_logs_never_hold_a_private_nets_name_whole(tmp_path, models):
    folder, _ = models
    with Process(tmp_path, '--models', str(folder), '--access-log') as s:
        name = make(s)['net']
        assert s.get(f'/nets/{name}/versions').status == 200
        assert s.post(f'/predict?net={name}', {'image': DIGIT}).status == 200
        assert s.post('/reset', {'net': name}).status == 200
        wait_for(lambda: f'/nets/{name[:6]}...' in s.output(), 'the access line')
        assert name not in s.output()  # access lines hold the path, never the query


def test_two_workers_serve_every_net_and_its_newest_version(tmp_path, models):
    """--workers 2: a net made, changed and rolled back through whichever worker the kernel
    picks is answered the same by both, at once."""
    folder, _ = models
    with Process(tmp_path, '--models', str(folder), '--workers', '2') as s:
        name = make(s, 1)['net']
        first = read(s, name)
        for _ in range(10):  # each request may land on either worker
            np.testing.assert_array_equal(read(s, name), first)
        assert s.post('/reset', {'net': name}).status == 200
        reset = read(s, name)
        assert not np.allclose(reset, first, atol=1e-5)
        for _ in range(10):
            np.testing.assert_array_equal(read(s, name), reset)
        assert s.post(f'/nets/{name}/rollback', {'version': 1}).status == 200
        for _ in range(10):
            got = read(s, name)
            assert np.array_equal(got, first), (
                'the reset net' if np.array_equal(got, reset) else got, s.output()[-6000:])
        assert s.get(f'/nets/{name}/versions').json['current'] == 3
        assert s.call('DELETE', f'/nets/{name}').status == 204
        for _ in range(6):
            assert s.post('/predict', {'image': DIGIT, 'net': name}).status == 404
