"""A net leaves the server, or comes in: pure functions on a ``Graph`` (no HTTP here).

- ``to_npz``: the library's own file (``Graph.save``), which ``Graph.from_file`` loads.
- ``to_onnx``: an ONNX model built with the ``onnx`` package's helpers from ``Graph.layers()``:
  input ``input`` FP32 ``[n, 784]`` (pixels in [0, 1]), output ``confidences`` FP32
  ``[n, 10]`` (the names ``/v2`` uses), one MatMul, Add and activation per layer.
- ``model_card``: Markdown in the spirit of Hugging Face model cards: what it is, its data
  and recipe, its figures and how they were measured, versions, limits.
- ``read_npz``: an uploaded NPZ through ``Graph.from_file``'s checks, within what the server
  takes.
"""
import importlib.metadata
import io
import platform

import numpy as np

import better_tensorflow as btf

from .errors import BadRequest

ONNX_OPSET = 13  # Softmax on one axis (opset 13's); every op used here exists since then
ONNX_IR_VERSION = 8  # what opset 13 needs; readers older than the onnx package's default
ONNX_OPS = {'sigmoid': 'Sigmoid', 'tanh': 'Tanh', 'relu': 'Relu', 'softmax': 'Softmax'}
INPUT, OUTPUT = 'input', 'confidences'
FORMATS = {  # format: (Content-Type, file extension)
    'npz': ('application/octet-stream', 'npz'),
    'onnx': ('application/octet-stream', 'onnx'),
    'card': ('text/markdown; charset=utf-8', 'md'),
}


def to_npz(graph):
    buffer = io.BytesIO()
    graph.save(buffer)
    return buffer.getvalue()


def to_onnx(graph, name='better_tensorflow'):
    """The net as a serialised ONNX model (opset 13), checked by onnx.checker."""
    import onnx  # only where a net is exported
    from onnx import TensorProto, helper, numpy_helper

    nodes, weights = [], []
    layers = graph.layers()
    x = INPUT
    for l, layer in enumerate(layers):
        weights += [numpy_helper.from_array(np.asarray(layer.weights, np.float32), f'W{l}'),
                    numpy_helper.from_array(np.asarray(layer.biases, np.float32), f'b{l}')]
        out = OUTPUT if l == len(layers) - 1 else f'a{l}'
        op = ONNX_OPS[layer.activation]
        nodes += [helper.make_node('MatMul', [x, f'W{l}'], [f'xW{l}'], name=f'dense{l}'),
                  helper.make_node('Add', [f'xW{l}', f'b{l}'], [f'z{l}'], name=f'bias{l}'),
                  helper.make_node(op, [f'z{l}'], [out], name=f'{layer.activation}{l}',
                                   **({'axis': 1} if op == 'Softmax' else {}))]
        x = out
    body = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ['n', graph.sizes[0]])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ['n', graph.sizes[-1]])],
        initializer=weights)
    model = helper.make_model(body, opset_imports=[helper.make_opsetid('', ONNX_OPSET)],
                              producer_name='better-tensorflow',
                              producer_version=_version('better-tensorflow'),
                              ir_version=ONNX_IR_VERSION,
                              doc_string=f'{"-".join(map(str, graph.sizes))} MNIST classifier: '
                                         f'{INPUT} = 28x28 pixels in [0, 1] (white ink on black)'
                                         f', {OUTPUT} = the 10 digits\' confidences')
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return 'unknown'


def read_npz(data, settings):
    """The net in an uploaded NPZ (bytes), or 400 saying what is expected. Nothing is read
    past Graph.from_file's checks unless the file declares a net within the server's limits
    (its parameters) and arrays that fit in twice its own size (a model file is stored, not
    compressed, and trained weights do not compress): a zip bomb is refused unread."""
    buffer = io.BytesIO(data)
    buffer.name = 'the file'
    try:
        return btf.Graph.from_file(buffer, max_parameters=largest_net(settings),
                                   max_inflated=2 * len(data) + 2 ** 16)
    except ValueError as e:
        raise BadRequest(f'{e}. Expected a net saved by better_tensorflow (Graph.save, or GET '
                         f'/nets/{{name}}/export?format=npz): an NPZ with '
                         f'{settings.default_sizes[0]} inputs, {settings.default_sizes[-1]} '
                         f'outputs, at most {settings.max_hidden_layers} hidden layers of at '
                         f'most {settings.max_units} units.') from None


def largest_net(settings):
    """Parameters of the largest net the server takes (--max-hidden-layers, --max-units)."""
    sizes = [settings.default_sizes[0], *[settings.max_units] * settings.max_hidden_layers,
             settings.default_sizes[-1]]
    return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


# ---------------------------------------------------------------------------------------
# The model card.

def _percent(value):
    return 'not measured' if value is None else f'{100 * value:.2f}%'


def model_card(graph, facts):
    """Markdown about ``graph``. ``facts``: 'title', 'kind' ('private', 'live', 'shipped'),
    'file' (the export's base name), and what is known: 'version', 'from', 'created',
    'validation_accuracy', 'trained_on_samples'; for a shipped model its manifest entry
    ('entry')."""
    entry = facts.get('entry') or {}
    sizes = '-'.join(map(str, graph.sizes))
    params = sum(W.size + b.size for W, b in zip(graph.weights, graph.biases))
    hidden = len(graph.sizes) - 2
    options = graph.options
    optimizer = options['optimizer'] + (
        f', momentum {options["momentum"]}' + (' (Nesterov)' if options['nesterov'] else '')
        if options['momentum'] else '')
    lines = [
        '---',
        'library_name: better-tensorflow',
        'pipeline_tag: image-classification',
        'tags: [mnist, digits, mlp, numpy, onnx]',
        'datasets: [mnist]',
        '---',
        '',
        f'# {facts["title"]}',
        '',
        f'A fully connected {sizes} network that reads a 28x28 grey image of a handwritten '
        f'digit (784 pixels in [0, 1], white ink on black, centred as MNIST\'s are) and gives '
        f'the confidence of each digit 0 to 9. {hidden} hidden layer'
        f'{"" if hidden == 1 else "s"} of {options["activation"]} units, '
        f'a {options["output"]} output; {params:,} parameters ({options["dtype"]}). '
        f'Made with better-tensorflow, a numpy library: no convolutions, no GPU.',
        '',
        '## Files',
        '',
        f'- `{facts["file"]}.npz`: the library\'s file: '
        '`better_tensorflow.Graph.from_file(path)`, then `net.predict(x)` or '
        '`net.predict_batch(X)`. It holds the optimiser\'s state, so training goes on '
        'where it stopped.',
        f'- `{facts["file"]}.onnx`: ONNX (opset {ONNX_OPSET}): input `{INPUT}` FP32 '
        f'`[n, {graph.sizes[0]}]`, output `{OUTPUT}` FP32 `[n, {graph.sizes[-1]}]`; e.g. '
        '`onnxruntime.InferenceSession(path).run(None, {"input": X})`.',
        '',
        '## Data',
        '',
        'MNIST (LeCun, Cortes and Burges): 70,000 28x28 images of handwritten digits, split by '
        '`preprocess.py` with seed 0 into 49,000 training images (all from the official '
        'training set), 14,000 validation images and 7,000 test images.',
    ]
    if facts.get('trained_on_samples'):
        lines += ['', 'Its last training also drew on drawings users kept on the server '
                      '(augmented), a small share of every epoch.']
    lines += ['', '## Recipe', '',
              f'- learning rate {graph.learning_rate}, batch size {graph.batch_size}, '
              f'optimizer {optimizer}, weight decay {options["weight_decay"]}, schedule '
              f'{options["schedule"]}',
              f'- cost {options["cost"]}, initialisation {options["init"]}, seed '
              f'{options["seed"]}',
              f'- epochs trained: {graph.epochs}']
    if entry.get('recipe'):
        lines.append(f'- in full: {entry["recipe"]}')
    if facts.get('from'):
        lines.append(f'- started as: {facts["from"]}')
    lines += ['', '## Figures', '', '| figure | value | how it was measured |', '|---|---|---|']
    if entry:
        for key, how in (
                ('test_accuracy', 'the official MNIST test set, 10,000 images, none trained on'),
                ('split_test_accuracy', 'the split\'s 7,000 test images'),
                ('validation_accuracy', 'the split\'s 14,000 validation images'),
                ('handwriting_accuracy', '400 canvas drawings (handwriting.py) through the '
                                         'server\'s image pipeline')):
            if entry.get(key) is not None:
                lines.append(f'| {key.replace("_", " ")} | {_percent(entry[key])} | {how} |')
    else:
        lines.append(f'| validation accuracy | {_percent(facts.get("validation_accuracy"))} | '
                     'the split\'s 14,000 validation images, after its last training on this '
                     'server (/train) |')
    lines.append(f'| epochs trained | {graph.epochs} | counted by the library |')
    lines += ['', 'Figures are fractions of images classified correctly (the largest '
                  'confidence is the answer). A test figure is the one to quote; a '
                  'validation figure helped choose when to stop, so it is a little '
                  'optimistic.']
    lines += ['', '## Versions', '',
              f'- {facts.get("kind", "net")} net, version {facts.get("version") or "1"}'
              + (f', made {facts["created"]}' if facts.get('created') else ''),
              f'- better-tensorflow {_version("better-tensorflow")} (model file format '
              f'{btf.FORMAT_VERSION}), numpy {np.__version__}, onnx {_version("onnx")}, '
              f'Python {platform.python_version()}',
              '', '## Limits', '',
              '- It knows MNIST\'s digits: one digit per image, centred by its centre of mass '
              'in a 20x20 box inside 28x28, white on black. Other images (letters, several '
              'digits, dark ink on white, photos) get a confident answer all the same: '
              'prepare them as the server does (`imaging.prepare`).',
              '- A fully connected net does not know that neighbouring pixels belong '
              'together: shifts and rotations that a convolutional net takes in its stride '
              'cost it accuracy.',
              '- MNIST\'s writers were American Census Bureau employees and high-school '
              'students; other hands, and digits written as other countries write them '
              '(a crossed 7, an open 4), are read less well.',
              '- Not for decisions about people: a learning and teaching model.', '']
    return '\n'.join(lines)
