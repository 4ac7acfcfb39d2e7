# docker-compose's `jupyter` profile: JupyterLab with the MLflow client and ML Manager's
# client (`mlmanager deploy|jobs`, the `mlmanager` MLflow deployments plugin), both
# preconfigured against the compose server through MLFLOW_TRACKING_URI/_USERNAME/_PASSWORD.
# Build from the repository's root: docker build -f infrastructure/jupyter.Dockerfile .

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
# JupyterLab is the notebook's only package outside requirements.lock (not a dependency of
# ML Manager itself), pinned here.
RUN pip install --only-binary=:all: -c requirements.lock . jupyterlab==4.6.6

FROM python:3.11.14-slim-bookworm
RUN useradd --create-home --uid 1000 --user-group jovyan
COPY --from=python /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER 1000:1000
WORKDIR /home/jovyan/work
EXPOSE 8888
ENTRYPOINT ["jupyter", "lab"]
CMD ["--ip=0.0.0.0", "--port=8888", "--no-browser"]
