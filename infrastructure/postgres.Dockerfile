# PostgreSQL 15 that scores deployed models inside the database (DEPLOY_DATABASE):
# PL/Python and, for the database's own Python (Debian 12: CPython 3.11), numpy and
# onnxruntime (+ mlflow-skinny and pandas for pyfunc models) at requirements.lock's
# versions. The server finds them through the setting mlmanager.plpython_path.
# H2O models are scored by mlrunner (a JRE and its jar, with py4j for the client),
# which the database's sessions start on demand (setting mlmanager.mlrunner_jar).
# Build from the repository's root: docker build -f infrastructure/postgres.Dockerfile .

# --- mlrunner's jar (its JUnit tests run in `make test`, not here) ---
FROM maven:3.9.11-eclipse-temurin-17 AS mlrunner
WORKDIR /build
COPY mlrunner/pom.xml ./
RUN mvn -B -q dependency:go-offline
COPY mlrunner/src ./src
RUN mvn -B -q package -DskipTests

# --- the scoring libraries for PL/Python (`make plpython-deps` installs the same) ---
FROM python:3.11.14-slim-bookworm AS plpython
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --only-binary=:all: --target /opt/mlmanager/plpython \
        -c /tmp/requirements.lock numpy onnxruntime mlflow-skinny pandas py4j \
    && chmod -R a+rX /opt/mlmanager/plpython

# --- runtime: PostgreSQL, PL/Python and a JRE; no pip, no compiler ---
FROM postgres:15.14-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-plpython3-15 \
        openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
COPY --from=plpython /opt/mlmanager/plpython /opt/mlmanager/plpython
COPY --from=mlrunner /build/target/mlrunner.jar /opt/mlmanager/mlrunner/mlrunner.jar
# The image's postgres user (uid 999); its entrypoint initialises PGDATA as that user.
USER 999:999
CMD ["postgres", "-c", "mlmanager.plpython_path=/opt/mlmanager/plpython", \
     "-c", "mlmanager.mlrunner_jar=/opt/mlmanager/mlrunner/mlrunner.jar"]
