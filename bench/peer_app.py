"""The peer of `python -m bench.serve --peer`: /predict as a well-written FastAPI app would
serve it, for a comparison of the serving stack alone.

What it shares with server.py: the canvas preprocessing (imaging.decode_base64 and
imaging.prepare) and the weights (the best shipped model), multiplied by plain numpy. What it
does its own way: FastAPI's request and response models (pydantic validates the body and
serialises the answer), an ``async def`` handler (no thread hop for half a millisecond of
work), uvicorn with uvloop and httptools, no access log, one BLAS thread (as server.py). It
answers what server.py answers for the bench's bodies, less the ``unsure`` field (label, the
ten confidences, the model, the input with ``return_input``), and 4xx for a bad image.

    BTF_PEER_MODEL=models/model-v7.npz python -m uvicorn bench.peer_app:app --port 8001 \\
        --loop uvloop --http httptools --no-access-log
"""
import os

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from threadpoolctl import threadpool_limits

import imaging

MODEL = os.environ.get('BTF_PEER_MODEL', 'models/model-v7.npz')
threadpool_limits(1, user_api='blas')  # as server.py: OpenBLAS's threads only wait when busy


def load_layers(path):
    """[(W (inputs, units), b (units,)), ...] of a better_tensorflow NPZ, read with numpy."""
    with np.load(path, allow_pickle=False) as npz:
        count = len(npz['sizes']) - 1
        return [(npz[f'W{l}'].astype(np.float32), npz[f'b{l}'].reshape(-1).astype(np.float32))
                for l in range(count)]


LAYERS = load_layers(MODEL)


def forward(x):
    """ReLU hidden layers, softmax output: confidences (10,) for one input (784,)."""
    a = x.reshape(1, -1)
    for W, b in LAYERS[:-1]:
        a = np.maximum(a @ W + b, 0)
    W, b = LAYERS[-1]
    z = a @ W + b
    e = np.exp(z - z.max())
    return (e / e.sum())[0]


class PredictRequest(BaseModel):
    image: str
    pretrained: int | None = None
    return_input: bool = False


class Confidence(BaseModel):
    label: int
    confidence: float


class Prediction(BaseModel):
    label: int
    predictions: list[Confidence]
    model: str
    input: list[list[float]] | None = None


app = FastAPI()


@app.post('/predict', response_model=Prediction, response_model_exclude_none=True)
async def predict(body: PredictRequest):
    try:
        x = imaging.prepare(imaging.decode_base64(body.image))
    except imaging.NoDigitError as e:
        raise HTTPException(422, str(e)) from None
    except imaging.ImageError as e:
        raise HTTPException(400, str(e)) from None
    confidences = forward(x)
    return Prediction(
        label=int(confidences.argmax()), model='live',
        predictions=[Confidence(label=k, confidence=c) for k, c in enumerate(confidences)],
        input=x.tolist() if body.return_input else None)


@app.get('/health')
async def health():
    return {'status': 'ok'}
