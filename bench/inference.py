"""Rows per second through the Open Inference Protocol (POST /v2/models/mnist/infer) at batches
of 1, 100 and 1,000 rows, JSON and binary, against /predict (one drawn canvas a request), on
one server in one run.

The load: C keep-alive connections of one asyncio client, each sending its next request when
the last answer arrived, for a fixed time. Rows are MNIST test digits (FP32 in [0, 1]); the
/predict bodies are bench/serve.py's canvases. It starts its own server.py on the shipped
models (the best one answers both routes).

    python -m bench.inference                 # about a minute
    python -m bench.inference --batches 1 10 100 --concurrency 1 --seconds 3
    python -m bench.inference --peers         # in-process against onnxruntime and PyTorch,
                                              # one thread each (bench/peers.py)
"""
import argparse
import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import preprocess
from bench import peers
from bench.serve import canvases, start_server, training_file

# Defaults (flags override them).
BATCHES = (1, 100, 1000)
CONCURRENCY = (1, 4)
SECONDS = 5.0
REQUESTS = 20  # distinct bodies per batch size
PATH = '/v2/models/mnist/infer'


async def send(reader, writer, path, body, headers):
    writer.write(f'POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n'
                 .encode() + ''.join(f'{k}: {v}\r\n' for k, v in headers.items()).encode()
                 + b'\r\n' + body)
    head = await reader.readuntil(b'\r\n\r\n')
    length = int(re.search(rb'(?i)\r\ncontent-length: *(\d+)', head).group(1))
    await reader.readexactly(length)
    return int(head[9:12])


async def measure(port, path, bodies, concurrency, seconds):
    """Requests, errors and latency percentiles (ms) of ``concurrency`` connections sending
    (body, headers) pairs back to back for ``seconds``."""
    latencies, errors = [], 0
    deadline = time.perf_counter() + seconds

    async def user(k):
        nonlocal errors
        reader, writer = await asyncio.open_connection('127.0.0.1', port)
        i = k
        while time.perf_counter() < deadline:
            body, headers = bodies[i % len(bodies)]
            i += concurrency
            sent = time.perf_counter()
            status = await send(reader, writer, path, body, headers)
            latencies.append(time.perf_counter() - sent)
            errors += status != 200
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(user(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {'requests': len(ms), 'rps': len(ms) / elapsed, 'errors': errors,
            'p50': float(np.percentile(ms, 50)), 'p99': float(np.percentile(ms, 99))}


def infer_bodies(X, batch, binary):
    """REQUESTS request bodies of ``batch`` rows each, JSON or in the binary data format."""
    bodies = []
    for k in range(REQUESTS):
        rows = X[np.arange(k * batch, (k + 1) * batch) % len(X)].astype('<f4')
        tensor = {'name': 'input', 'datatype': 'FP32', 'shape': [batch, 784]}
        if binary:
            tensor['parameters'] = {'binary_data_size': rows.nbytes}
            head = json.dumps({'inputs': [tensor], 'outputs': [
                {'name': 'confidences', 'parameters': {'binary_data': True}}]}).encode()
            bodies.append((head + rows.tobytes(),
                           {'Inference-Header-Content-Length': str(len(head))}))
        else:
            tensor['data'] = rows.ravel().tolist()
            bodies.append((json.dumps({'inputs': [tensor]}).encode(),
                           {'Content-Type': 'application/json'}))
    return bodies


async def run(args, port, X, canvases_):
    print('| route | rows a request | body KiB | connections | requests/s | rows/s | '
          'p50 ms | p99 ms | errors |')
    print('|---|---|---|---|---|---|---|---|---|')
    predict = [(body, {'Content-Type': 'application/json'}) for body in canvases_]
    cases = [('/predict (PNG canvas)', '/predict', 1, predict)]
    for batch in args.batches:
        cases.append((f'{PATH} JSON', PATH, batch, infer_bodies(X, batch, False)))
        cases.append((f'{PATH} binary', PATH, batch, infer_bodies(X, batch, True)))
    for _, path, _, bodies in cases:  # warm-up
        await measure(port, path, bodies, 1, 0.5)
    for c in args.concurrency:
        for label, path, batch, bodies in cases:
            r = await measure(port, path, bodies, c, args.seconds)
            size = np.mean([len(b) for b, _ in bodies]) / 1024
            print(f"| {label} | {batch:,} | {size:,.1f} | {c} | {r['rps']:,.1f} | "
                  f"{r['rps'] * batch:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                  f"{r['errors']} |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--batches', type=int, nargs='+', default=BATCHES)
    parser.add_argument('--concurrency', type=int, nargs='+', default=CONCURRENCY)
    parser.add_argument('--seconds', type=float, default=SECONDS)
    parser.add_argument('--data', type=Path, default=preprocess.DEFAULT_OUTPUT)
    parser.add_argument('--peers', action='store_true',
                        help='Graph.predict_batch in-process against onnxruntime and PyTorch '
                             'on the same weights, one thread each (no server)')
    parser.add_argument('--rounds', type=int, default=peers.ROUNDS, help='with --peers')
    args = parser.parse_args(argv)
    if args.peers:
        peers.run(args.batches, args.rounds, min(args.seconds, peers.SECONDS))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = training_file(args.data, folder)
        X_test, _ = preprocess.load_dataset(data)['test']
        process, port = start_server(folder, data, 1)
        print(f'server.py on 127.0.0.1:{port}, {os.cpu_count()} cores, one asyncio client, '
              f'{args.seconds:g} s per row; the best shipped model answers both routes\n')
        try:
            asyncio.run(run(args, port, X_test, canvases(X_test, REQUESTS)))
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)
    return 0


if __name__ == '__main__':
    sys.exit(main())
