# The fleetpulse services for docker-compose.yml (sink today; processors, API and pager later).
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY infra ./infra
COPY src ./src
RUN pip install --no-cache-dir ".[all]" && useradd --create-home fleetpulse
USER fleetpulse
WORKDIR /home/fleetpulse
ENTRYPOINT []
CMD ["fleetpulse", "--help"]
