# One image for the four services; docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY models ./models
COPY serving ./serving
COPY simulator ./simulator
RUN pip install --no-cache-dir .
USER nobody
