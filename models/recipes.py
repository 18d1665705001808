"""Choose the best model's recipe on validation images: ``python models/recipes.py``.

Trains candidate 784-800-10 recipes (plain SGD, momentum, Adam; sigmoid or ReLU; with and
without elastic distortions) on the split's 49,000 training images and scores each on the
11,000 validation images that come from the official training set: no test image (official or
the split's) is looked at, so choosing by this table cannot fit the test set. Prints a Markdown
table (docs/models.md holds the one measured). Each candidate trains EPOCHS epochs with a
cosine schedule over them; the chosen recipe is then trained longer by build.py.

    python models/recipes.py                  # every candidate, EPOCHS epochs each
    python models/recipes.py --epochs 5 --only relu-nesterov-elastic
"""
import argparse
import time

import numpy as np
from tqdm import tqdm

import preprocess
from models import build

EPOCHS = 20
SIZES = (784, 800, 10)
BATCH = 64

# name: (learning rate, options, augmentation)
CANDIDATES = {
    'sigmoid-sgd-affine': (1.0, dict(), 'affine'),
    'sigmoid-momentum-affine': (0.1, dict(momentum=0.9), 'affine'),
    'sigmoid-adam-affine': (0.001, dict(optimizer='adam'), 'affine'),
    'relu-sgd-affine': (0.3, dict(activation='relu'), 'affine'),
    'relu-nesterov-affine': (0.05, dict(activation='relu', momentum=0.9, nesterov=True),
                             'affine'),
    'relu-adam-affine': (0.0005, dict(activation='relu', optimizer='adam'), 'affine'),
    'relu-nesterov-none': (0.05, dict(activation='relu', momentum=0.9, nesterov=True), 'none'),
    'relu-nesterov-elastic': (0.05, dict(activation='relu', momentum=0.9, nesterov=True),
                              'elastic'),
    'sigmoid-momentum-elastic': (0.1, dict(momentum=0.9), 'elastic'),
    'relu-nesterov-mild-elastic': (0.05, dict(activation='relu', momentum=0.9, nesterov=True),
                                   'mild-elastic'),
}


def recipe(name, epochs):
    rate, options, augmentation = CANDIDATES[name]
    return dict(sizes=SIZES, learning_rate=rate, batch_size=BATCH, epochs=epochs,
                options=dict(options, schedule=('cosine', epochs, 0.0)),
                augmentation=augmentation)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--epochs', type=int, default=EPOCHS)
    parser.add_argument('--only', nargs='*', choices=sorted(CANDIDATES), default=None)
    args = parser.parse_args(argv)
    (train_set, test), folder = build.load_mnist(preprocess.mnist_dirs())
    parts = build.split(train_set, test)
    X, y = parts['val_train']
    val = (X, y)
    names = args.only or list(CANDIDATES)
    print(f'{len(names)} candidates, {args.epochs} epochs each, trained on '
          f'{len(parts["train"][1]):,} images, scored on {len(y):,} validation images from the '
          'official training set\n')
    print('| recipe | activation | optimiser | learning rate | distortions | '
          f'validation accuracy after {args.epochs} epochs | best epoch | seconds |')
    print('|---|---|---|---|---|---|---|---|')
    for name in names:
        r = recipe(name, args.epochs)
        started = time.perf_counter()
        with tqdm(total=build.batches(r, len(parts['train'][1])), unit='batch', desc=name,
                  leave=False) as bar:
            net, history = build.train(r, parts['train'], bar, val=val)
        accuracy = [h['val_accuracy'] for h in history]
        o = net.config
        optimiser = (o.optimizer if not o.momentum else
                     f'sgd, {"nesterov " if o.nesterov else ""}momentum {o.momentum:g}')
        print(f'| {name} | {o.activation} | {optimiser} | {r["learning_rate"]:g} | '
              f'{r["augmentation"]} | {100 * accuracy[-1]:.2f}% | {int(np.argmax(accuracy)) + 1} '
              f'({100 * max(accuracy):.2f}%) | {time.perf_counter() - started:.0f} |',
              flush=True)


if __name__ == '__main__':
    main()
