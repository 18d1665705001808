"""Drawings that may be mislabelled: judged by nets that never learned from them.

In the spirit of confident learning (cleanlab's ``find_label_issues``: a label is an issue
when out-of-sample predicted probabilities give it a low self-confidence and confidently
name another class), a stored drawing is judged by the nets that did not learn from it:

- the strong shipped models (test accuracy at least ``JUDGE_ACCURACY``; they never saw a
  user's drawing),
- when it is stored, the net it is sent to (if it reads ``JUDGE_ACCURACY`` of MNIST's
  validation images), which has not learned from it yet,
- after a training with samples, the trained net, for the drawings it did not train on (the
  held-out fifth and the held-back ones): ``after_training``.

Each judge's ten outputs are normalised to sum to 1 and averaged over the judges. The drawing
is **suspect** when that mean gives its label less than ``LOW`` and another digit at least
``HIGH``, and every judge reads that other digit. The shipped judges' verdict stands on its
own: a net trained on users' drawings may add its voice to find a drawing suspect, never to
clear one the shipped judges find suspect (poison that got through once would otherwise vouch
for more of its kind). A drawing is judged alone: never by its
sender's other drawings (a school's class shares one address, a harness posts thousands).
The thresholds were tuned on real digits (docs/models.md, "Drawings held back"): real MNIST
4s labelled 9 are poison, MNIST test digits and handwriting.py canvases that v7 misreads are
honest corrections that must mostly pass.
"""
import asyncio
import logging

import numpy as np

from .samples import in_store, is_validation

log = logging.getLogger(__name__)
JUDGE_ACCURACY = 0.97  # a net judges only when it reads this share of MNIST's held-out digits
LOW = 0.02  # the label's mean probability under which a drawing may be suspect
HIGH = 0.5  # ... and another digit's mean probability at least this


def judges(app, net=None):
    """(the shipped models strong enough to judge (by their test accuracy), [``net``'s graph]
    when ``net`` (a service Net, or None) reads at least JUDGE_ACCURACY of the validation
    digits, else [])."""
    shipped = [graph for _, (entry, graph) in sorted(app.ctx.pretrained.items())
               if (entry.get('test_accuracy') or 0) >= JUDGE_ACCURACY]
    good = net is not None and (net.meta.get('validation_accuracy') or 0) >= JUDGE_ACCURACY
    return shipped, [net.graph] if good else []


def probabilities(graphs, X):
    """(judges, n, 10): each judge's outputs for X (n, 784) in [0, 1], normalised to sum 1."""
    out = []
    for graph in graphs:
        _, outputs = graph.predict_batch(X)
        outputs = np.maximum(np.asarray(outputs, np.float64), 1e-12)
        out.append(outputs / outputs.sum(axis=1, keepdims=True))
    return np.stack(out)


def verdicts(graphs, X, y, low=LOW, high=HIGH):
    """(suspect (n,) bool, reads_as (n,) int, label_p (n,), reads_p (n,)) of drawings X
    (n, 784) uint8 labelled y (n,), by the judges ``graphs``; none suspect without judges.
    ``low``, ``high``: the thresholds (bench.poison --thresholds tries others)."""
    n = len(y)
    y = np.asarray(y, np.int64)
    if not graphs or n == 0:
        return (np.zeros(n, bool), np.asarray(y), np.ones(n), np.ones(n))
    P = probabilities(graphs, np.asarray(X, np.float32).reshape(n, 784) / np.float32(255))
    mean = P.mean(axis=0)  # (n, 10)
    rows = np.arange(n)
    label_p = mean[rows, y]
    others = mean.copy()
    others[rows, y] = -1
    reads_as = others.argmax(axis=1)
    reads_p = mean[rows, reads_as]
    agree = (P.argmax(axis=2) == reads_as[None]).all(axis=0)
    suspect = (label_p < low) & (reads_p >= high) & agree
    return suspect, reads_as, label_p, reads_p


def judged(shipped, trained, X, y):
    """``verdicts`` of the shipped judges, where they find a drawing suspect; else of every
    judge (the trained ones add their voice)."""
    alone = verdicts(shipped, X, y)
    if not trained:
        return alone
    together = verdicts(shipped + trained, X, y)
    keep = alone[0]
    return tuple(np.where(keep, a, b) for a, b in zip(alone, together))


def judge_one(app, net, pixels, label):
    """The judgement of one drawing as it is stored: {suspect, reads_as, label_p, reads_p}."""
    suspect, reads_as, label_p, reads_p = judged(*judges(app, net), pixels[None], [label])
    return {'suspect': bool(suspect[0]), 'reads_as': int(reads_as[0]),
            'label_p': round(float(label_p[0]), 4), 'reads_p': round(float(reads_p[0]), 4)}


def reason(sample):
    """Why a listed sample is held back, in words; None when it is not."""
    if sample.get('review') == 'rejected':
        return f'labelled {sample["label"]}; rejected by a review'
    if not sample.get('judged_suspect') or sample.get('review') == 'approved':
        return None
    return (f'labelled {sample["label"]}; reads as {sample["reads_as"]} '
            f'({sample["reads_p"]:.0%}) to nets that never learned from it')


def listed(sample):
    """A store row as /samples lists it: "suspect" (held back from the shared net) and,
    when suspect, its "reason"; the judges' figures stay apart from the answer."""
    why = reason(sample)
    row = {k: v for k, v in sample.items()
           if k not in ('judged_suspect', 'reads_as', 'reads_p', 'label_p')}
    row['suspect'] = why is not None
    if why is not None:
        row['reason'] = why
        if sample.get('judged_suspect'):
            row['reads_as'] = sample['reads_as']
    return row


async def after_training(app, name):
    """Judge again, after a training with samples, the drawings of net ``name`` that its new
    version did not train on (the held-out fifth and the held-back ones), with the shipped
    judges and that version. Never fails the training: a problem is logged."""
    try:
        net = await app.ctx.nets.get(name)
        ids, X, y = await in_store(app, 'arrays', name)
        usable = (await in_store(app, 'arrays', name, False))[0] if hold(app, name) else ids
        out = is_validation(ids) | ~np.isin(ids, usable)  # what the new version never saw
        if not out.any():
            return
        loop = asyncio.get_running_loop()
        suspect, reads_as, label_p, reads_p = await loop.run_in_executor(
            app.ctx.decoders, judged, *judges(app, net), X[out], y[out])
        rows = [(int(i), bool(s), int(r), round(float(lp), 4), round(float(rp), 4))
                for i, s, r, lp, rp in zip(ids[out], suspect, reads_as, label_p, reads_p)]
        await in_store(app, 'judge', rows)
        log.info('judged again %d drawings of %s after its training: %d suspect', len(rows),
                 name, int(suspect.sum()))
    except Exception:
        log.exception('the drawings of %s could not be judged again', name)


def hold(app, name):
    """Whether the held-back drawings are left out of ``name``'s training: the shared net's,
    unless --no-hold-suspect; a private net trains on all of its owner's drawings."""
    return name == 'live' and app.ctx.settings.hold_suspect
