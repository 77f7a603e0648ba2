# The statekeeper worker image. Kafka and Redis come from docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY statekeeper ./statekeeper
RUN pip install .

# Listen on all interfaces inside the container; compose publishes the port.
ENV STATEKEEPER_WEB_HOST=0.0.0.0 \
    STATEKEEPER_WEB_PORT=6066 \
    STATEKEEPER_VAR_DIR=/var/lib/statekeeper
VOLUME ["/var/lib/statekeeper"]
EXPOSE 6066
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:6066/healthz', timeout=2)" || exit 1
CMD ["statekeeper", "worker"]
