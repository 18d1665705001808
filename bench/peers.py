"""In-process inference, one thread each: Graph.predict_batch against onnxruntime and PyTorch
on the same weights (the best shipped model) and the same rows (MNIST test digits from
models/mnist-test.npz), at batches of 1, 100 and 1,000 rows. Run by
``python -m bench.inference --peers``.

The engines take turns, a round at a time, each for SECONDS of its thread's CPU time per
batch size; the ratios are of the same round (the machine's load changes between rounds),
and the table gives their median. Every engine's outputs are checked against ours first.
"""
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import better_tensorflow as btf

ROOT = Path(__file__).resolve().parent.parent

# Defaults (bench.inference's flags override them).
BATCHES = (1, 100, 1000)
ROUNDS = 7
SECONDS = 0.5   # of CPU time per engine, batch size and round
INPUTS = 8      # distinct batches each engine cycles through
TOLERANCE = 1e-5  # largest difference of a peer's confidences from ours
ONNX_OPSET = 17
ONNX_IR = 9     # onnx 1.23 writes IR 14 unless told, onnxruntime 1.31 reads up to 13


def onnx_session(net):
    """An onnxruntime session of the net's layers (MatMul, Add, activation), one thread."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper
    nodes, weights, previous = [], [], 'input'
    layers = net.layers()
    for l, layer in enumerate(layers):
        weights += [numpy_helper.from_array(layer.weights, f'W{l}'),
                    numpy_helper.from_array(layer.biases, f'b{l}')]
        out = 'output' if l == len(layers) - 1 else f'a{l}'
        op = {'relu': 'Relu', 'sigmoid': 'Sigmoid', 'tanh': 'Tanh',
              'softmax': 'Softmax'}[layer.activation]
        nodes += [helper.make_node('MatMul', [previous, f'W{l}'], [f'm{l}']),
                  helper.make_node('Add', [f'm{l}', f'b{l}'], [f'z{l}']),
                  helper.make_node(op, [f'z{l}'], [out], **({'axis': 1} if op == 'Softmax'
                                                            else {}))]
        previous = out
    graph = helper.make_graph(
        nodes, 'mlp', [helper.make_tensor_value_info('input', TensorProto.FLOAT,
                                                     [None, net.sizes[0]])],
        [helper.make_tensor_value_info('output', TensorProto.FLOAT, [None, net.sizes[-1]])],
        weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', ONNX_OPSET)],
                              ir_version=ONNX_IR)
    onnx.checker.check_model(model)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=['CPUExecutionProvider'])
    return lambda X: session.run(None, {'input': X})[0]


def torch_model(net):
    """The net as torch.nn.Sequential (Linear, activation), one thread, no autograd."""
    import torch
    torch.set_num_threads(1)
    modules = []
    for layer in net.layers():
        linear = torch.nn.Linear(*layer.weights.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(layer.weights.T.copy()))
            linear.bias.copy_(torch.from_numpy(layer.biases.copy()))
        activation = {'relu': torch.nn.ReLU(), 'sigmoid': torch.nn.Sigmoid(),
                      'tanh': torch.nn.Tanh(), 'softmax': torch.nn.Softmax(dim=1)}
        modules += [linear, activation[layer.activation]]
    model = torch.nn.Sequential(*modules).eval()

    def predict(X):
        with torch.inference_mode():
            return model(torch.from_numpy(X)).numpy()
    return predict


def rows_per_second(predict, inputs, seconds):
    """Rows per second of this thread's CPU time: every engine runs on the calling thread
    alone, and CPU time does not count the time the machine's other processes hold the
    core (which wall time on a shared machine mostly measures)."""
    predict(inputs[0])
    calls, started = 0, time.thread_time()
    while (elapsed := time.thread_time() - started) < seconds:
        for X in inputs:
            predict(X)
        calls += len(inputs)
    return calls * len(inputs[0]) / elapsed


def run(batches=BATCHES, rounds=ROUNDS, seconds=SECONDS):
    test = np.load(ROOT / 'models' / 'mnist-test.npz')
    rows = test['X'].reshape(len(test['X']), -1)
    rows = rows.astype(np.float32) / 255 if rows.dtype == np.uint8 else rows.astype(np.float32)
    manifest = btf.MODELS_DIR / 'models.json'
    best = json.loads(manifest.read_text())['best']
    net = btf.Graph.from_file(btf.MODELS_DIR / f'model-v{best}.npz')
    engines = {'better_tensorflow': lambda X: net.predict_batch(X)[1],
               'onnxruntime': onnx_session(net)}
    try:
        engines['PyTorch'] = torch_model(net)
    except ImportError:  # a large download (requirements-bench.txt): compare without it
        print('PyTorch is not installed: comparing with onnxruntime alone')
    probe = rows[:100]
    ours = engines['better_tensorflow'](probe)
    for name, predict in engines.items():
        difference = float(np.abs(predict(probe) - ours).max())
        print(f'{name}: largest difference of a confidence from ours {difference:.1e}')
        assert difference < TOLERANCE, name
    print(f'\nmodel-v{best}.npz {"-".join(map(str, net.sizes))}, one thread each, '
          f'{rounds} rounds of {seconds:g} s per engine and batch, load average '
          f'{" ".join(f"{x:.2f}" for x in os.getloadavg())}\n')
    names = list(engines)
    results = {(b, n): [] for b in batches for n in names}
    with threadpool_limits(1):
        for r in range(rounds):
            for b in batches:
                inputs = [np.ascontiguousarray(rows[(k * b) % (len(rows) - b):][:b])
                          for k in range(INPUTS)]
                order = names if r % 2 == 0 else names[::-1]  # alternate who goes first
                for n in order:
                    results[b, n].append(rows_per_second(engines[n], inputs, seconds))
    print('| rows a call | ' + ' | '.join(f'{n} rows/s' for n in names) + ' | '
          + ' | '.join(f'ours / {n} (same round)' for n in names[1:]) + ' |')
    print('|---' * (2 * len(names)) + '|')
    for b in batches:
        ratios = [statistics.median(a / o for a, o in zip(results[b, names[0]],
                                                          results[b, n])) for n in names[1:]]
        print(f'| {b:,} | ' + ' | '.join(f'{statistics.median(results[b, n]):,.0f}'
                                         for n in names)
              + ' | ' + ' | '.join(f'{r:.2f}x' for r in ratios) + ' |', flush=True)
    print(f'\nload average after: {" ".join(f"{x:.2f}" for x in os.getloadavg())}')
    return results
