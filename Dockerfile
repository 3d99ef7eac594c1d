# syntax=docker/dockerfile:1.7
# TrustCard task service image: `trustcard api` and `trustcard worker` are its commands.

ARG PYTHON_VERSION=3.11

# --- build: the locked dependencies and a wheel of the project, in a throwaway stage ---
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Tools of this stage only (pip, the build backend from its lock); the runtime virtualenv gets
# no pip or setuptools of its own (--without-pip): pip is run against it from here.
COPY requirements-build.lock ./
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes --no-deps -r requirements-build.lock \
    && python -m venv --without-pip /opt/trustcard
# The dependencies, exactly as locked (versions and hashes): a layer reused until the lock changes.
COPY requirements.lock ./
RUN /opt/build/bin/pip --python /opt/trustcard/bin/python install --no-compile \
    --require-hashes -r requirements.lock
COPY pyproject.toml README.md LICENSE ./
COPY service ./service
# The project itself, without dependencies (all locked above); `pip check` fails the build
# when the lock no longer satisfies what pyproject.toml asks for.
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
    && /opt/build/bin/pip --python /opt/trustcard/bin/python install --no-compile --no-deps \
       --no-index /tmp/wheels/trustcard-*.whl \
    && /opt/build/bin/pip --python /opt/trustcard/bin/python check \
    && /opt/trustcard/bin/python -m compileall -q /opt/trustcard/lib

# --- runtime: no compilers, no pip, a fixed non-root user matching the chart ---
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
