# Trickle: slim, non-root, served by gunicorn exactly as the Procfile does.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PORT=8000
WORKDIR /app

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY app.py gunicorn.conf.py Procfile ./
COPY trickle ./trickle
COPY templates ./templates
COPY static ./static

RUN useradd --create-home --uid 10001 trickle && mkdir -p /app/instance && chown trickle /app/instance
USER trickle

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/healthz', timeout=4)"
CMD ["sh", "-c", "flask --app app init-db && exec gunicorn app:app"]
