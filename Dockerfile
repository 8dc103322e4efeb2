# Vigil: one image for every flow and for the replay producer (docker-compose.yml).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/vigil

# Dependencies first, so code changes do not reinstall them.
COPY pyproject.toml README.md ./
COPY sources/ sources/
COPY flows/ flows/
COPY detectors/ detectors/
COPY sinks/ sinks/
COPY dashboards/ dashboards/
RUN pip install . && useradd --system --home /var/lib/vigil --create-home vigil

USER vigil
WORKDIR /var/lib/vigil
# Metrics (Prometheus scrapes this port on every Vigil container).
EXPOSE 9464
ENTRYPOINT ["vigil"]
CMD ["--help"]
