"""Rebuild every pretrained model, seeded, from raw MNIST: ``make models``.

    python models/build.py            # -> models/model-v1.npz ... model-v7.npz, models.json, *.png
    python models/build.py --only 1   # only the ladder (v1-v5, one run); the rest is kept

Every model trains on the same 49,000 images: the training part of preprocess.py's split
(seed 0), drawn from the 60,000 official training images only. None of them ever sees the
validation part (the other 11,000 official training images and 3,000 official test images:
what ``/train`` validates on) or any official test image. Every model is then scored on the
10,000 official test images, on the split's 14,000 validation and 7,000 test images, and on the
handwriting check (``handwriting.py``: digits drawn as pen strokes on a canvas, sent through
the server's own image pipeline), and the summary is printed.

- v1 ... v5, the ladder: one seeded 784-30-10 net (sigmoid hidden layer, softmax output,
  cross-entropy, plain SGD), saved after a few mini-batches, after its first epoch, and when
  fully trained.
- v6: 784-800-10, sigmoid, plain SGD with a step schedule, on freshly distorted digits every
  epoch (``augment.py``: shifts, rotations, scaling, shear, stroke thickness).
- v7, the best model and the default of ``/pretrain``: 784-800-10, ReLU, SGD with Nesterov
  momentum and a cosine schedule, on digits distorted every epoch by the affine maps and by
  elastic distortions (Simard et al. 2003); its recipe was chosen on validation images
  (``models/recipes.py``, docs/models.md), never on test images.

Raw MNIST is looked for where preprocess.find_mnist looks ($MNIST_DIR, then data/raw/).
Weights may differ in the last bits between BLAS builds, so a rebuild elsewhere may score a
few images differently.
"""
import argparse
import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

import augment
import better_tensorflow as btf
import handwriting
import preprocess

ROOT = Path(__file__).resolve().parent.parent

OUT_DIR = ROOT / 'models'
MANIFEST = 'models.json'
PLOT = 'ladder.png'
PREVIEW = 'handwriting.png'  # the first drawings of every digit and what the server makes of them
PREVIEW_PER_DIGIT = 4
SEED = 0
BEST = 7

# The ladder: one net trained by these epochs, and saved as (version, after this many
# mini-batches); v5 is the end. 383 batches of 128 = one epoch of 49,000 images.
LADDER = dict(sizes=(784, 30, 10), learning_rate=1.0, batch_size=128, epochs=30,
              options=dict(schedule=('step', 20, 0.3)), augmentation='none')
LADDER_STOPS = ((1, 8), (2, 25), (3, 60), (4, 383))

# The larger models: a fresh distortion of the training part every epoch.
RECIPES = {
    6: dict(sizes=(784, 800, 10), learning_rate=0.8, batch_size=32, epochs=30,
            options=dict(schedule=('step', 8, 0.35)), augmentation='affine'),
    # The cosine ends at 1% of the rate, not 0: /train fine-tunes a copy of the best model,
    # and a rate of 0 would leave it unchanged.
    7: dict(sizes=(784, 800, 10), learning_rate=0.05, batch_size=64, epochs=120,
            options=dict(activation='relu', momentum=0.9, nesterov=True,
                         schedule=('cosine', 120, 0.0005)), augmentation='mild-elastic'),
}
AUGMENTATIONS = {'none': None, 'affine': {},
                 'elastic': {'elastic': (augment.ELASTIC_ALPHA, augment.ELASTIC_SIGMA)},
                 'mild-elastic': {'elastic': (augment.ELASTIC_ALPHA / 2, augment.ELASTIC_SIGMA)}}


def load_mnist(folders):
    """The official split from the first folder holding raw MNIST (IDX or mnist.pkl.gz).

    Returns ((X (60000, 784) uint8, y int64), (X (10000, 784), y)) and the folder used.
    """
    for folder in folders:
        if preprocess.has_source(folder):
            X, y, n_train = preprocess.read_raw(folder)  # 60,000 training images first
            y = y.astype(np.int64)
            return ((X[:n_train], y[:n_train]), (X[n_train:], y[n_train:])), folder
    raise SystemExit('no raw MNIST found in ' + ', '.join(map(str, folders)) +
                     ': set MNIST_DIR, or run `python preprocess.py --download`.')


def split(train, test, seed=SEED):
    """preprocess.py's split of the official sets: {'train', 'val', 'val_train', 'test'}
    as (X uint8, y) pairs. 'val_train' is the part of 'val' from the official training set
    (11,000 images), on which recipes are chosen without looking at any test image."""
    X, y = np.concatenate([train[0], test[0]]), np.concatenate([train[1], test[1]])
    index = preprocess.split_indices(len(X), len(train[0]), 'random', seed)
    parts = {name: (X[i], y[i]) for name, i in index.items()}
    keep = index['val'] < len(train[0])
    parts['val_train'] = (X[index['val'][keep]], y[index['val'][keep]])
    return parts


def augmented_epochs(X, augmentation, epochs, seed=SEED):
    """The training images of each epoch, distorted freshly (each epoch from its own seeded
    generator), prepared one epoch ahead in a thread while the current epoch trains."""
    if AUGMENTATIONS[augmentation] is None:
        for _ in range(epochs):
            yield X
        return
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(epochs)]
    with ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(augment.augment, X, rngs[0], **AUGMENTATIONS[augmentation])
        for k in range(epochs):
            images = ahead.result()
            if k + 1 < epochs:
                ahead = pool.submit(augment.augment, X, rngs[k + 1],
                                    **AUGMENTATIONS[augmentation])
            yield images


def train(recipe, data, bar=None, callback=None, val=None):
    """A net trained by ``recipe`` on ``data`` (X uint8, y); ``bar`` counts mini-batches.
    Returns the net and its history."""
    X, y = data
    net = btf.Graph(recipe['sizes'], recipe['learning_rate'], recipe['batch_size'], seed=SEED,
                    **recipe['options'])
    history = []

    def tick(info):
        if bar is not None and info['event'] == 'batch':
            bar.update()
        return callback(info) if callback is not None else None

    for images in augmented_epochs(X, recipe['augmentation'], recipe['epochs']):
        net.feed((images, y), val)
        history += net.run(1, callback=tick, progress=False)
    net.train_data = net.val_data = None
    return net, history


def batches(recipe, n):
    return recipe['epochs'] * -(-n // recipe['batch_size'])


def recipe_text(recipe):
    """The recipe in words, for the manifest."""
    o = btf.Options(**recipe['options'])
    optimizer = {'sgd': 'plain SGD', 'adam': 'Adam'}[o.optimizer]
    if o.momentum:
        optimizer = f'SGD with {"Nesterov " if o.nesterov else ""}momentum {o.momentum}'
    name, *params = o.schedule
    schedule = {'constant': 'constant learning rate',
                'step': 'learning rate x{1} every {0:g} epochs',
                'exponential': 'learning rate x{0} per epoch',
                'cosine': 'cosine schedule to {1:g} over {0:g} epochs'}[name].format(*params)
    data = {'none': 'the 49,000 training images as they are',
            'affine': 'a fresh random distortion of the 49,000 training images every epoch '
                      f'({augment_text()}; augment.py)',
            }
    if 'elastic' in recipe['augmentation']:
        alpha, sigma = AUGMENTATIONS[recipe['augmentation']]['elastic']
        data = ('a fresh random distortion of the 49,000 training images every epoch '
                f'({augment_text()}, and elastic distortions with alpha {alpha:g}, sigma '
                f'{sigma:g}; augment.py)')
    else:
        data = data[recipe['augmentation']]
    return (f'{"-".join(map(str, recipe["sizes"]))}, {o.activation} hidden layer, {o.output} '
            f'output, {o.cost.replace("_", "-")}, {o.init} init, seed {SEED}, batch size '
            f'{recipe["batch_size"]}, {optimizer}, learning rate {recipe["learning_rate"]}, '
            f'{schedule}, {recipe["epochs"]} epochs on {data}.')


def augment_text():
    return (f'shift up to {augment.MAX_SHIFT} px, rotation up to {augment.MAX_ROTATION} '
            f'degrees, scale {augment.SCALE[0]}-{augment.SCALE[1]} per axis, shear up to '
            f'{augment.MAX_SHEAR}, strokes thinner/unchanged/thicker with probabilities '
            f'{"/".join(map(str, augment.THICKNESS))}')


def train_ladder(data, out, bar):
    """v1..v5: one seeded 784-30-10 net, saved at LADDER_STOPS and at the end."""
    per_epoch = -(-len(data[0]) // LADDER['batch_size'])
    stops = {batches: version for version, batches in LADDER_STOPS}
    net = btf.Graph(LADDER['sizes'], LADDER['learning_rate'], LADDER['batch_size'], seed=SEED,
                    **LADDER['options'])
    net.feed(data)
    built = []

    def snapshot(info):
        if info['event'] == 'batch':
            bar.update()
            if info['batch'] == per_epoch:
                return  # the 'epoch' event that follows saves it, with the epoch counted
        seen = (info['epoch'] - 1) * per_epoch + info['batch']
        if seen in stops:
            built.append((stops[seen], net.save(out / f'model-v{stops[seen]}.npz'), dict(
                batches=seen, recipe=f'{recipe_text(LADDER)[:-1]}: stopped after {seen} '
                                     f'mini-batches ({seen / per_epoch:.2g} epoch).')))

    net.run(LADDER['epochs'], callback=snapshot, progress=False)
    net.train_data = None
    built.append((5, net.save(out / 'model-v5.npz'), dict(batches=net.epochs * per_epoch,
                                                          recipe=recipe_text(LADDER))))
    for _, _, extra in built:
        extra['recipe_spec'] = LADDER
    return built


def train_recipe(version, data, out, bar):
    net, _ = train(RECIPES[version], data, bar)
    return [(version, net.save(out / f'model-v{version}.npz'), dict(
        batches=batches(RECIPES[version], len(data[0])), recipe=recipe_text(RECIPES[version]),
        recipe_spec=RECIPES[version]))]


def describe(version, path, extra, scores):
    """The manifest entry of one saved model, scored on every evaluation set."""
    net = btf.Graph.from_file(path)
    spec = extra['recipe_spec']
    entry = {'version': version, 'file': path.name, 'sizes': list(net.sizes),
             'options': net.options, 'learning_rate': net.learning_rate,
             'batch_size': net.batch_size, 'epochs': net.epochs, 'batches': extra['batches'],
             'optimizer': net.config.optimizer, 'momentum': net.config.momentum,
             'nesterov': net.config.nesterov, 'schedule': net.options['schedule'],
             'augmentation': spec['augmentation'], 'recipe': extra['recipe'],
             'trained_on': 'split train (49,000 official training images)'}
    for key, (X, y) in scores.items():
        entry[key] = net.evaluate(X, y)
    entry['sha256'] = hashlib.sha256(path.read_bytes()).hexdigest()
    return entry


def plot(models, path, width=520, height=280):
    """A small bar chart of test (dark) and handwriting (light) accuracy per version."""
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 46, 12, 30, 34
    span = height - top - bottom

    def y_of(fraction):
        return int(round(top + span * (1 - fraction)))

    font = cv2.FONT_HERSHEY_SIMPLEX
    for tick in range(0, 101, 20):
        y = y_of(tick / 100)
        cv2.line(img, (left, y), (width - right, y), (225, 225, 225), 1)
        cv2.putText(img, f'{tick}%', (4, y + 4), font, 0.4, (90, 90, 90), 1, cv2.LINE_AA)
    slot = (width - left - right) / len(models)
    dark, light = (150, 90, 30), (225, 180, 120)  # BGR blues
    for k, m in enumerate(models):
        x0 = int(left + k * slot + slot * 0.15)
        bar = int(slot * 0.35)
        for j, (key, colour) in enumerate((('test_accuracy', dark),
                                           ('handwriting_accuracy', light))):
            cv2.rectangle(img, (x0 + j * bar, y_of(m[key])), (x0 + (j + 1) * bar - 2,
                                                              y_of(0)), colour, -1)
        cv2.putText(img, f'{100 * m["test_accuracy"]:.1f}', (x0 - 2, y_of(m['test_accuracy']) - 4),
                    font, 0.35, (40, 40, 40), 1, cv2.LINE_AA)
        cv2.putText(img, f'v{m["version"]}', (x0 + bar - 8, height - bottom + 16), font, 0.45,
                    (40, 40, 40), 1, cv2.LINE_AA)
    for j, (text, colour) in enumerate((('MNIST test', dark), ('handwriting check', light))):
        x = left + 8 + j * 150
        cv2.rectangle(img, (x, 10), (x + 12, 22), colour, -1)
        cv2.putText(img, text, (x + 18, 21), font, 0.42, (40, 40, 40), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--mnist-dir', type=Path,
                        help='folder with the raw MNIST files (default: the first of $MNIST_DIR '
                             'and data/raw/ that has them)')
    parser.add_argument('--out', type=Path, default=OUT_DIR,
                        help='where to write the models (default: %(default)s)')
    parser.add_argument('--only', type=int, nargs='+', metavar='VERSION',
                        choices=[*range(1, 6), *RECIPES],
                        help='rebuild only these models (any of 1-5 rebuilds the ladder, one '
                             'run); the others keep their files and manifest entries')
    args = parser.parse_args(argv)
    started = time.perf_counter()
    versions = set(args.only or [*range(1, 6), *RECIPES])
    kept = {}
    if args.only:
        kept = {m['version']: m for m in json.loads((args.out / MANIFEST).read_text())['models']
                if m['version'] not in versions and not (m['version'] <= 5 and versions & {
                    *range(1, 6)})}
    folders = [args.mnist_dir] if args.mnist_dir else preprocess.mnist_dirs()
    (train_set, test), folder = load_mnist(folders)
    parts = split(train_set, test)
    n = len(parts['train'][0])
    print(f'MNIST from {folder}: training on the split\'s {n:,} training images (official '
          f'training set only); scoring on the {len(test[0]):,} official test images')
    args.out.mkdir(parents=True, exist_ok=True)
    ladder = bool(versions & {*range(1, 6)})
    recipes = [v for v in RECIPES if v in versions]
    total = ladder * batches(LADDER, n) + sum(batches(RECIPES[v], n) for v in recipes)
    with tqdm(total=total, unit='batch', desc='make models') as bar:
        built = train_ladder(parts['train'], args.out, bar) if ladder else []
        for version in recipes:
            bar.set_description(f'v{version} {"-".join(map(str, RECIPES[version]["sizes"]))}')
            built += train_recipe(version, parts['train'], args.out, bar)
    drawn = handwriting.samples()
    hand = handwriting.prepare(drawn), np.array([label for label, _, _ in drawn])
    shown = [k for k, (_, _, p) in enumerate(drawn) if p['index'] < PREVIEW_PER_DIGIT]
    cv2.imwrite(str(args.out / PREVIEW), handwriting.preview([drawn[k] for k in shown],
                                                             hand[0][shown], size=48))
    scores = {'test_accuracy': test, 'validation_accuracy': parts['val'],
              'split_test_accuracy': parts['test'], 'handwriting_accuracy': hand}
    models = sorted([describe(*b, scores) for b in built] + list(kept.values()),
                    key=lambda m: m['version'])
    manifest = {'best': BEST,
                'test_set': 'official MNIST test set, 10,000 images (test_accuracy)',
                'split': 'preprocess.py --split random, seed 0: train 49,000 images, all from '
                         'the official training set (every model trains on these alone); '
                         'validation 14,000 = the other 11,000 official training images + '
                         '3,000 official test images (validation_accuracy; what /train '
                         'validates on); test 7,000 = the other official test images '
                         '(split_test_accuracy)',
                'handwriting_set': f'handwriting.py: {len(hand[1])} canvas drawings '
                                   f'({handwriting.PER_DIGIT} per digit, seed '
                                   f'{handwriting.SEED}) through imaging.prepare',
                'models': models}
    (args.out / MANIFEST).write_text(json.dumps(manifest, indent=2) + '\n')
    plot(models, args.out / PLOT)
    print(f'\n{"model":6} {"sizes":12} {"batches":>8} {"MNIST test":>10} {"validation":>10} '
          f'{"handwriting":>11}')
    for m in models:
        print(f'v{m["version"]:<5} {"-".join(map(str, m["sizes"])):12} {m["batches"]:8} '
              f'{100 * m["test_accuracy"]:9.2f}% {100 * m["validation_accuracy"]:9.2f}% '
              f'{100 * m["handwriting_accuracy"]:10.2f}%')
    print(f'wrote {len(models)} models, {MANIFEST}, {PLOT} and {PREVIEW} to {args.out} in '
          f'{time.perf_counter() - started:.0f} s')


if __name__ == '__main__':
    main()
