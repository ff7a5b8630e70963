# One image for the example services and the trace viewer (see docker-compose.yml).
#   docker build -t choreo .
#   docker run --rm choreo choreo demo --no-ui        # the in-memory demo, no Kafka needed
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

# Dependencies first (with the `metrics` extra: `--metrics-port`), so editing the code does
# not re-download them.
COPY pyproject.toml README.md ./
COPY choreo/_version.py choreo/_version.py
RUN python -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb')); \
print('\n'.join(d['project']['dependencies'] + d['project']['optional-dependencies']['metrics']))" \
    > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY choreo choreo
COPY services services
COPY schemas schemas
RUN pip install .[postgres] \
    && useradd --create-home --uid 10001 choreo \
    && mkdir -p /data \
    && chown choreo /data

# The services keep their store (inbox, outbox, own tables) in $CHOREO_STORE (PostgreSQL in
# docker-compose.yml), or in SQLite files under /data when it is not set.
VOLUME ["/data"]
USER choreo
ENV SHOP_DATA_DIR=/data \
    CHOREO_SCHEMAS_DIR=/app/schemas

CMD ["choreo", "--help"]
