# One image for the services; docker-compose.yml picks the command. Dependencies come from requirements.lock
# (hash-checked, the same pins CI tests), then the project itself without resolving anything again.
FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY streamrec ./streamrec
COPY stream ./stream
COPY models ./models
COPY serving ./serving
COPY simulator ./simulator
COPY infra ./infra
RUN pip install --no-cache-dir --no-deps .
USER nobody
