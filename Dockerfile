# syntax=docker/dockerfile:1.7
# TrustCard task service image: `trustcard api` and `trustcard worker` are its commands.

ARG PYTHON_VERSION=3.11

# --- build: a wheel of the project and its dependencies, in a throwaway virtualenv ---
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/trustcard
COPY pyproject.toml README.md ./
COPY service ./service
RUN /opt/trustcard/bin/pip install --no-compile . \
    && /opt/trustcard/bin/python -m compileall -q /opt/trustcard/lib

# --- runtime: no compilers, no pip cache, a fixed non-root user matching the chart ---
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="trustcard" \
      org.opencontainers.image.description="TrustCard task service: FastAPI API and Celery workers on Redis" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/trustcard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 trustcard \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/trustcard --create-home \
       --shell /usr/sbin/nologin trustcard
COPY --from=build /opt/trustcard /opt/trustcard
USER 10001:10001
WORKDIR /home/trustcard
EXPOSE 8000
# Liveness is probed by Kubernetes per component (HTTP for the API, heartbeat file for workers).
HEALTHCHECK NONE
# Exec form: `trustcard` is PID 1 and (for workers) execs Celery, so SIGTERM reaches it directly.
ENTRYPOINT ["trustcard"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
