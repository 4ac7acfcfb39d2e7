# The serving image of DEPLOY_KUBERNETES (and SageMaker/Azure containers): `mlrunner serve`,
# a JRE and the jar only. It fetches its model bundle from ML Manager's model route with the
# per-deployment token (MLRUNNER_MODEL_TOKEN), checks its SHA-256, and answers MLflow's
# scoring protocol on 8080 (POST /invocations, GET /ping /health /version /metrics).
#   docker run IMAGE --model https://mlmanager/.../bundle --sha256 HEX
# Build from the repository's root (the name KUBERNETES_SERVING_IMAGE defaults to):
#   docker build -t mlmanager/serving:0.1.0 -f infrastructure/serving.Dockerfile .

FROM maven:3.9.11-eclipse-temurin-17 AS mlrunner
WORKDIR /build
COPY mlrunner/pom.xml ./
RUN mvn -B -q dependency:go-offline
COPY mlrunner/src ./src
RUN mvn -B -q package -DskipTests

FROM eclipse-temurin:17.0.16_8-jre-jammy
RUN useradd --no-create-home --uid 10001 --user-group mlrunner
COPY --from=mlrunner /build/target/mlrunner.jar /opt/mlmanager/mlrunner/mlrunner.jar
USER 10001:10001
EXPOSE 8080
# The JVM options of `mlmanager serve` (mlmanager/serve.py SERVE_JAVA_OPTS).
ENTRYPOINT ["java", "-Xms64m", "-Xmx512m", "-XX:+UseSerialGC", "-jar", "/opt/mlmanager/mlrunner/mlrunner.jar", "serve"]
