# better-tensorflow's server in a container: the pinned requirements, a non-root user, state
# on a volume. The command is `make run`'s (server.py --host --port), listening on every
# interface of the container (tests/test_operations.py checks that the two agree). It answers
# the Host names localhost/127.0.0.1/::1 and any IP address; a name of your own must be listed
# in BTF_ALLOWED_HOSTS (a page elsewhere whose name resolves here, DNS rebinding, gets 403).
# '*' (any Host) is refused at start without BTF_TOKEN.
#
#   docker build -t better-tensorflow .
#   docker run -p 8000:8000 -v btf-state:/data/state -e BTF_TOKEN=<secret> \
#       -e BTF_ALLOWED_HOSTS=digits.example.org better-tensorflow
#   (training data: -v /path/to/mnist_preprocessed.npz:/data/mnist_preprocessed.npz:ro)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The pins first (a layer that changes only with them), then the project itself.
COPY requirements.txt pyproject.toml README.md ./
COPY better_tensorflow.py preprocess.py imaging.py augment.py handwriting.py server.py ./
COPY service ./service
RUN pip install .
COPY static ./static
COPY models ./models

RUN useradd --create-home --uid 10001 btf && mkdir -p /data/state && chown -R btf /data
USER btf
VOLUME /data/state
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4)"]

# Run from /app (server.py's folder comes first on sys.path), so that models/ and static/
# are found beside the service. SIGTERM (docker stop) ends it gracefully.
ENTRYPOINT ["python", "server.py"]
CMD ["--host", "0.0.0.0", "--port", "8000", "--state", "/data/state", "--data", "/data/mnist_preprocessed.npz"]
