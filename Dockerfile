# One image for both processes:
#   docker run IMAGE                    -> hooklane ingest (gunicorn on $PORT, default 8000)
#   docker run IMAGE hooklane worker    -> a worker (set HOOKLANE_HEALTHCHECK_URL, see below)
#   docker run IMAGE hooklane admin --bind 0.0.0.0:8002
#                                       -> the admin API (HOOKLANE_ADMIN_TOKEN; publish 8002 on a private network only)
# Config: mount hooklane.toml at $HOOKLANE_CONFIG; pass secrets and REDIS_URL as environment variables.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOOKLANE_CONFIG=/etc/hooklane/hooklane.toml \
    HOOKLANE_LOG_FORMAT=json \
    PORT=8000

WORKDIR /app

# Dependencies in their own layer, keyed on pyproject.toml alone: a source change does not reinstall them.
# The list is read from [project].dependencies, so there is no second requirements file to keep in sync.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project itself, installed as the Makefile installs it (editable: code runs from /app, as in CI).
COPY . .
RUN pip install --no-deps -e . \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin hooklane

USER hooklane

EXPOSE 8000

# python, not curl: the slim image has no curl. Ingest answers /healthz on $PORT; a worker container sets
# HOOKLANE_HEALTHCHECK_URL=http://127.0.0.1:<metrics port>/healthz (run with --metrics-port), or disables it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('HOOKLANE_HEALTHCHECK_URL') or 'http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=3)"]

CMD ["hooklane", "ingest"]
