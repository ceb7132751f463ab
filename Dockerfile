# lookalike: one image for the web service and the index job.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    LOOKALIKE_LIBRARY=/data/library TORCH_HOME=/data/torch
WORKDIR /app
COPY pyproject.toml README.md ./
COPY indexer ./indexer
COPY search ./search
COPY web ./web
COPY lookalike ./lookalike
RUN pip install .

# Never root at run time; /data is the shared library volume.
RUN useradd --create-home --uid 1000 lookalike && mkdir -p /data && chown lookalike /data
USER lookalike
VOLUME ["/data"]
EXPOSE 5000
CMD ["lookalike", "serve", "--host", "0.0.0.0", "--port", "5000"]
