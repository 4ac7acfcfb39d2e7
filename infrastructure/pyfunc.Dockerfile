# The fallback serving image, for models mlrunner cannot serve (a custom pyfunc, a
# predict_proba model, no input example): `mlmanager serve MODEL_URI`, which runs
# `mlflow models serve` on the same routes. It reads the model from the ML Manager server
# (MLFLOW_TRACKING_URI, _USERNAME, _PASSWORD).
#   docker run IMAGE models:/churn/3 --host 0.0.0.0 --port 8080
# The Kubernetes pods of such models run `python -m shared.kube.pod` in it (the model
# fetched with the deployment's token, then `mlflow models serve`).
# Build from the repository's root (the name KUBERNETES_PYFUNC_IMAGE defaults to):
#   docker build -t mlmanager/pyfunc:0.1.0 -f infrastructure/pyfunc.Dockerfile .

FROM python:3.11.14-slim-bookworm AS python
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY mlmanager ./mlmanager
COPY shared ./shared
COPY mlflow_server ./mlflow_server
COPY bobby ./bobby
COPY releases ./releases
RUN pip install --only-binary=:all: -c requirements.lock .

FROM python:3.11.14-slim-bookworm
RUN useradd --create-home --uid 1000 --user-group mlmanager
COPY --from=python /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    MLMANAGER_HOME=/home/mlmanager/data
USER 1000:1000
WORKDIR /home/mlmanager
EXPOSE 8080
ENTRYPOINT ["mlmanager", "serve"]
