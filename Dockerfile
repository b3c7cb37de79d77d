# Slim image running `switchyard serve`; mount your gateway YAML at /config/gateway.yaml.
#   docker build -t switchyard .
#   docker run -p 8080:8080 -v $PWD/gateway.yaml:/config/gateway.yaml:ro -e OPENAI_API_KEY switchyard
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    SWITCHYARD_CONFIG=/config/gateway.yaml \
    SWITCHYARD_POLICIES_DIR=/app/routing_policies

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY routing_policies ./routing_policies
RUN pip install --no-compile . && rm -rf /root/.cache

USER nobody
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"
CMD ["switchyard", "serve", "--host", "0.0.0.0", "--port", "8080"]
