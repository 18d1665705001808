"""A net of one's own to play with: what a learner may choose, checked by the library itself,
and what they see of it while it trains.

- A fresh net (``POST /nets {"from": "fresh", "sizes": [784, ..., 10], "options": {...}}``):
  its shape within the server's limits (--max-hidden-layers, --max-units) and the library's
  own options (``NET_OPTIONS``, the names of ``Graph``'s arguments), with its defaults.
- A training (``/train {"options": {...}}``): the options ``Graph.configure`` may change on a
  made net (``TRAINING_OPTIONS``), applied to the copy that trains and so kept in the version
  it saves.
- Every refusal names the field and quotes the library's words ("options.momentum must be a
  number in [0, 1), got 2."), or the server's limit by its flag.
- Once per epoch the training process measures what a learner sees of the net
  (``trainer.epoch_view``: training accuracy, validation loss, the confusion matrix, the
  first units' pictures).
"""
import inspect

import better_tensorflow as btf

from .errors import BadRequest
from .parsing import shown

# The options a learner chooses for a fresh net: Graph's arguments, less dtype (float32 is
# what the server's nets are; float64 only doubles their memory).
NET_OPTIONS = ('learning_rate', 'batch_size', 'activation', 'output', 'cost', 'init',
               'optimizer', 'momentum', 'nesterov', 'weight_decay', 'schedule', 'seed')
# What a training may change (Graph.configure): the rest says what the net is.
TRAINING_OPTIONS = ('learning_rate', 'batch_size', *btf.TRAINING_OPTIONS)
_SIGNATURE = inspect.signature(btf.Graph.__init__).parameters


def defaults():
    """The library's defaults of NET_OPTIONS (Graph's signature and Options' fields)."""
    options = btf.Options().as_dict()
    return {name: _SIGNATURE[name].default if name in _SIGNATURE else options[name]
            for name in NET_OPTIONS}


def offered(settings):
    """What the page offers, as /models' settings show it: the limits, the options with
    their defaults, and the choices of the options that are names."""
    return {'max_hidden_layers': settings.max_hidden_layers, 'max_units': settings.max_units,
            'max_epochs': settings.max_epochs, 'max_import_bytes': settings.max_import_bytes,
            'inputs': settings.default_sizes[0], 'outputs': settings.default_sizes[-1],
            'net_options': list(NET_OPTIONS), 'training_options': list(TRAINING_OPTIONS),
            'defaults': defaults(),
            'choices': {'activation': list(btf.HIDDEN_ACTIVATIONS),
                        'output': list(btf.OUTPUTS), 'cost': list(btf.COST_NAMES),
                        'init': list(btf.INITS), 'optimizer': sorted(btf.OPTIMIZERS),
                        'schedule': sorted(btf.SCHEDULES)}}


def check_sizes(sizes, settings):
    """``sizes`` ([784, hidden..., 10]) within the server's limits, else 400 naming them."""
    inputs, outputs = settings.default_sizes[0], settings.default_sizes[-1]
    example = f'[{inputs}, 64, {outputs}]'
    if not isinstance(sizes, list) or len(sizes) < 2 or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in sizes):
        raise BadRequest(f'sizes must be a list of layer sizes (ints) like {example}; got '
                         f'{shown(sizes)}.')
    if sizes[0] != inputs or sizes[-1] != outputs:
        raise BadRequest(f'sizes must start with {inputs} (the 28x28 pixels) and end with '
                         f'{outputs} (the digits), like {example}; got {shown(sizes)}.')
    hidden = sizes[1:-1]
    if len(hidden) > settings.max_hidden_layers:
        raise BadRequest(f'sizes has {len(hidden)} hidden layers, more than this server allows '
                         f'(--max-hidden-layers {settings.max_hidden_layers}).')
    for layer, units in enumerate(hidden, 1):
        if not 1 <= units <= settings.max_units:
            raise BadRequest(f'hidden layer {layer} has {units} units; each has 1 to '
                             f'{settings.max_units} (--max-units {settings.max_units}).')
    return tuple(sizes)


def check_options(options, allowed, current=None):
    """The ``options`` object of a body, checked by the library on a 1x1 net together with
    the ``current`` options it changes; 400 "options.<field> ..." else."""
    if not isinstance(options, dict):
        raise BadRequest(f'options must be an object like {{"learning_rate": 0.1, '
                         f'"optimizer": "adam"}}; got {shown(options)}.')
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise BadRequest(f'options.{shown(unknown[0], quote=False)} is not an option here: the '
                         f'options are {", ".join(allowed)}.')
    try:
        btf.Graph((1, 1), **{**(current or {}), **options})
    except (ValueError, TypeError) as e:
        # The library's messages begin with the field they refuse ("momentum must be ...").
        raise BadRequest(f'options.{e}') from None
    return dict(options)


def fresh_net(sizes, options, settings):
    """A new net of ``sizes`` with the learner's ``options`` (the library's defaults for the
    rest); 400 for anything the library or the server's limits refuse."""
    sizes = check_sizes(sizes, settings)
    options = check_options(options, NET_OPTIONS)
    return btf.Graph(sizes, **options)


def training_work(graph, epochs, options):
    """What a training costs, in weight-epochs: epochs x the net's weights and biases, and a
    batch under 64 rows costs as much as 64 (a small batch's products are bound by reading
    the weights, not by its rows)."""
    weights = sum(w.size + b.size for w, b in zip(graph.weights, graph.biases))
    batch = options.get('batch_size', graph.batch_size)
    return epochs * weights * max(1, 64 // batch), weights


def check_work(graph, epochs, options, settings):
    """400 for a training past the server's budget for one job (--max-training-work): a
    learner's 784-2048x4 net for 100 epochs would hold a training slot for hours."""
    work, weights = training_work(graph, epochs, options)
    if work > settings.max_training_work:
        most = settings.max_training_work // (work // epochs)
        batch = options.get('batch_size', graph.batch_size)
        small = f', batches of {batch} counted as 64' if work // epochs > weights else ''
        raise BadRequest(f'epochs: {epochs} epochs of this net ({weights:,} weights{small}'
                         f') are {work:,} weight-epochs; one training may do at most '
                         f'{settings.max_training_work:,} (--max-training-work): ask for at '
                         f'most {most} epoch{"" if most == 1 else "s"}'
                         f'{"" if most else ", or a larger batch or a smaller net"}.')


def training_options(options, graph):
    """The options a /train asks for, checked against the net's own (an Adam net given
    "momentum" alone is refused: momentum is SGD's)."""
    current = {k: v for k, v in graph.options.items() if k in btf.TRAINING_OPTIONS}
    current |= {'learning_rate': graph.learning_rate, 'batch_size': graph.batch_size}
    return check_options(options, TRAINING_OPTIONS, current)
