# The server and the trainer share this image. CPU build of torch, pinned as in requirements.lock.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

COPY pyproject.toml README.md requirements.lock ./
COPY common ./common
COPY publisher ./publisher
COPY subscriber ./subscriber
COPY fks ./fks
RUN pip install -c requirements.lock '.[s3]'

RUN useradd --create-home --uid 10001 fks && mkdir -p /models /app/cache && chown fks /models /app/cache
USER fks
EXPOSE 8000
CMD ["fks", "serve", "--host", "0.0.0.0", "--port", "8000"]
