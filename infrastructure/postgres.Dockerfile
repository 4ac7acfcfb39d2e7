# PostgreSQL 15 that scores deployed models inside the database (DEPLOY_DATABASE):
# PL/Python and, for the database's own Python (Debian 12: CPython 3.11), numpy and
# onnxruntime (+ mlflow-skinny and pandas for pyfunc models) at requirements.lock's
# versions. The server finds them through the setting mlmanager.plpython_path.
FROM postgres:15-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-plpython3-15 python3-pip \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.lock /tmp/requirements.lock
RUN python3 -m pip install --no-cache-dir --break-system-packages --only-binary=:all: \
        --target /opt/mlmanager/plpython -c /tmp/requirements.lock \
        numpy onnxruntime mlflow-skinny pandas \
    && chmod -R a+rX /opt/mlmanager/plpython
CMD ["postgres", "-c", "mlmanager.plpython_path=/opt/mlmanager/plpython"]
