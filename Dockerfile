# Slim image running `switchyard serve`; mount your gateway YAML at /config/gateway.yaml.
#   docker build -t switchyard .
#   docker run -p 8080:8080 -v $PWD/gateway.yaml:/config/gateway.yaml:ro -e OPENAI_API_KEY switchyard
#
# Supply chain: every Python package is the exact version and hash in requirements.lock (refresh:
# README, "Running at scale"), installed before the source is copied so that a code change
# rebuilds from the dependency layer on. The base image is pinned by the digest of python:3.11-slim's
# multi-platform index (Python 3.11.15 on Debian trixie, built 2026-08-05) as published in
# docker-library/repo-info (repos/python/remote/3.11-slim.md); no registry was reachable to check it
# live. To move to a newer build: `docker buildx imagetools inspect python:3.11-slim`, digest below.
FROM python:3.11-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    SWITCHYARD_CONFIG=/config/gateway.yaml \
    SWITCHYARD_POLICIES_DIR=/app/routing_policies

WORKDIR /app
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock && pip check

COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY routing_policies ./routing_policies
# --no-deps: everything is installed above; --no-build-isolation: built with the locked setuptools
RUN pip install --no-deps --no-build-isolation --no-compile . && rm -rf /root/.cache build

USER nobody
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"
CMD ["switchyard", "serve", "--host", "0.0.0.0", "--port", "8080"]
