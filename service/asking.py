"""Which drawings a net needs next (GET /nets/{name}/ask): a first round of ``EACH`` drawings
of every digit, then more of the digits the net reads worst or is least sure of (uncertainty
sampling by least margin, as active-learning tools such as modAL and Prodigy do)."""
import numpy as np

EACH = 5  # drawings of every digit in the first round (what bench.adapt adapts with)
SURE = 0.5  # a digit whose drawings' least margin is below this is one the net is unsure of
MORE = 3  # digits asked for after the first round when the net reads all of them surely
CHUNK = 1024  # drawings read at a time


def margins(graph, X, y):
    """Per drawing: whether the net reads it right, and its margin: the probability of the
    true digit less the highest other one (negative when read wrong)."""
    right = np.empty(len(y), bool)
    margin = np.empty(len(y), np.float32)
    for i in range(0, len(y), CHUNK):
        part = slice(i, i + CHUNK)
        predicted, outputs = graph.predict_batch(X[part])
        rows = np.arange(len(outputs))
        true = outputs[rows, y[part]].copy()
        outputs[rows, y[part]] = -np.inf
        right[part] = predicted == y[part]
        margin[part] = true - outputs.max(axis=1)
    return right, margin


def ask(graph, X, y):
    """{"ask": digits to ask for next, most needed first, "per_digit": {"0": {"drawings",
    "right", "margin"}...}} for a net's drawings X (n, 784) uint8 with labels y (n,)."""
    y = np.asarray(y, np.int64)
    counts = np.bincount(y, minlength=10)[:10]
    right, margin = margins(graph, np.asarray(X, np.float32) / np.float32(255), y) \
        if len(y) else (np.zeros(0, bool), np.zeros(0, np.float32))
    per_digit, need = {}, {}
    for d in range(10):
        mine = y == d
        wrong = int(counts[d] - right[mine].sum())
        least = float(margin[mine].min()) if counts[d] else None
        per_digit[str(d)] = {'drawings': int(counts[d]), 'right': int(counts[d]) - wrong,
                             'least_margin': None if least is None else round(least, 4)}
        need[d] = (wrong / counts[d] if counts[d] else 1.0, least if least is not None else -1)
    missing = [d for d in range(10) if counts[d] < EACH]
    if missing:  # the first round: the digits it has fewest of, in order
        order = sorted(missing, key=lambda d: (counts[d], d))
    else:
        ranked = sorted(range(10), key=lambda d: (-need[d][0], need[d][1], d))
        order = [d for d in ranked if need[d][0] > 0 or need[d][1] < SURE] or ranked[:MORE]
    return {'ask': order, 'per_digit': per_digit, 'each': EACH,
            'round': 'first' if missing else 'more'}
