# dicomnode as a container: the DICOM SCP on 11112, the admin API on 8080 (loopback
# inside the container unless the configuration says otherwise), the spool in a volume.
#
#   docker build -t dicomnode .
#   docker run -d --name dicomnode --init --stop-timeout 60 -p 11112:11112 \
#       -v dicomnode-data:/var/lib/dicomnode -v "$PWD/rules:/etc/dicomnode/rules:ro" dicomnode
#
# docs/admin-guide.md says how to configure, watch and recover it.

# --- build: a virtual environment with the package and its runtime dependencies -----
FROM python:3.11-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY dicomnode ./dicomnode
RUN python -m venv /opt/dicomnode/.venv \
    && /opt/dicomnode/.venv/bin/pip install --no-cache-dir -c constraints.txt . \
    && /opt/dicomnode/.venv/bin/dicomnode --version

# --- runtime: the same base, the venv, a non-root user ------------------------------
FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="dicomnode" \
      org.opencontainers.image.description="A DICOM node beside the PACS: receive, route, run AI models, send SEG/SR back" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed UID/GID, so a volume or bind mount can be prepared for it on the host.
RUN groupadd --system --gid 10001 dicomnode \
    && useradd --system --uid 10001 --gid dicomnode --no-create-home \
        --home-dir /var/lib/dicomnode --shell /usr/sbin/nologin dicomnode \
    && mkdir -p /var/lib/dicomnode /etc/dicomnode/rules \
    && chown dicomnode:dicomnode /var/lib/dicomnode \
    && chmod 0750 /var/lib/dicomnode

COPY --from=build /opt/dicomnode/.venv /opt/dicomnode/.venv
# The same configuration the systemd install uses: AE DICOMNODE on 0.0.0.0:11112, storage
# in /var/lib/dicomnode, rules from /etc/dicomnode/rules, admin API on 127.0.0.1:8080.
COPY systemd/dicomnode.yaml /etc/dicomnode/dicomnode.yaml

ENV PATH=/opt/dicomnode/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=1

# The spool and the SQLite index: keep them in a named volume or a bind mount, and back
# them up together (docs/admin-guide.md).
VOLUME ["/var/lib/dicomnode"]
WORKDIR /var/lib/dicomnode
# Numeric, so the runtime (and Kubernetes runAsNonRoot) can tell it is not root.
USER 10001:10001

# 11112: DICOM (C-STORE/C-ECHO SCP). 8080: the admin HTTP API, reachable from outside only
# when the configuration binds it to 0.0.0.0 with a token.
EXPOSE 11112 8080

# /healthz answers 200 while the process is alive; urllib raises (exit 1) on anything else.
# The start period covers loading the TensorFlow models the rules use.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

# SIGTERM: the node stops accepting, finishes in-flight C-STOREs and exits. Docker waits
# only 10 s by default before SIGKILL: run with --stop-timeout 60 (compose:
# stop_grace_period: 60s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["dicomnode"]
CMD ["serve", "--config", "/etc/dicomnode/dicomnode.yaml"]
