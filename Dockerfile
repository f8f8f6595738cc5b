# scenetrigger: one image for every command (worker, collector, produce, replay, ...).
#   docker build -t scenetrigger .
#   docker run --rm scenetrigger replay /data/events.jsonl
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Build from a copy of the sources; only the installed package stays in the image.
COPY pyproject.toml setup.py README.md /src/
COPY triggers /src/triggers
COPY agents /src/agents
COPY channels /src/channels
COPY config /src/config
COPY scenetrigger /src/scenetrigger
COPY strategies /src/strategies
RUN pip install /src && rm -rf /src

# Non-root; the worker's RocksDB state lives in its home (mount a volume there).
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin scenetrigger
USER scenetrigger
WORKDIR /home/scenetrigger

ENTRYPOINT ["scenetrigger"]
CMD ["--help"]
