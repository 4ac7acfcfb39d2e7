package io.mlmanager.mlrunner.serve;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mlmanager.mlrunner.Fixtures;
import io.mlmanager.mlrunner.runner.Runners;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.zip.ZipEntry;
import java.util.zip.ZipOutputStream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The scoring server on a real socket with the logistic-regression fixture (classes alpha,
 * beta, gamma over x1..x3): every request format gives the fixture's expected labels, and bad
 * input gets MLflow's error JSON with a 4xx, never a 500. (Parity with `mlflow models serve`
 * itself is tests/integration/test_serving.py.)
 */
class ScoringServerTest {
    private static final HttpClient CLIENT = HttpClient.newHttpClient();
    private static ScoringServer server;
    private static String base;

    static byte[] bundle(Fixtures.Model model) throws IOException {
        String inputs = "[{\"name\": \"x1\", \"sql_type\": \"DOUBLE\"}, {\"name\": \"x2\", \"sql_type\": \"DOUBLE\"},"
                + " {\"name\": \"x3\", \"sql_type\": \"DOUBLE\"}]";
        String metadata = "{\"format\": \"onnx\", \"kind\": \"classification\", \"inputs\": " + inputs
                + ", \"classes\": [\"alpha\", \"beta\", \"gamma\"], \"model_uri\": \"runs:/fixture/logreg\"}";
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try (ZipOutputStream zip = new ZipOutputStream(bytes)) {
            zip.putNextEntry(new ZipEntry(ModelBundle.METADATA_ENTRY));
            zip.write(metadata.getBytes(StandardCharsets.UTF_8));
            zip.putNextEntry(new ZipEntry(ModelBundle.PAYLOAD_ENTRY));
            zip.write(model.payload());
        }
        return bytes.toByteArray();
    }

    @BeforeAll
    static void start() throws Exception {
        byte[] bundle = bundle(Fixtures.model("logreg"));
        ServeOptions options = ServeOptions.parse(List.of("--model", "unused", "--sha256", Runners.sha256(bundle),
                "--host", "127.0.0.1", "--port", "0", "--threads", "2", "--max-body-bytes", "4096"));
        server = ScoringServer.start(options);
        base = "http://127.0.0.1:" + server.port();
        assertEquals(503, get("/ping").statusCode(), "not ready before the model is loaded");
        server.load(ModelBundle.read(bundle, Runners.sha256(bundle)));
    }

    @AfterAll
    static void stop() {
        server.drain();
    }

    private static HttpResponse<String> get(String path) throws Exception {
        return CLIENT.send(HttpRequest.newBuilder(URI.create(base + path)).build(),
                HttpResponse.BodyHandlers.ofString());
    }

    private static HttpResponse<String> post(String contentType, String body) throws Exception {
        return CLIENT.send(HttpRequest.newBuilder(URI.create(base + "/invocations"))
                .header("Content-Type", contentType)
                .POST(HttpRequest.BodyPublishers.ofString(body)).build(), HttpResponse.BodyHandlers.ofString());
    }

    private static void assertBadRequest(int status, String body, String mentions) throws Exception {
        HttpResponse<String> response = post("application/json", body);
        assertEquals(status, response.statusCode(), response.body());
        assertTrue(response.body().startsWith("{\"error_code\":\"BAD_REQUEST\""), response.body());
        assertTrue(response.body().contains(mentions), response.body());
    }

    @Test
    void everyRequestFormatGivesTheModelsLabels() throws Exception {
        Fixtures.Model model = Fixtures.model("logreg");
        String first = model.expected().get(0)[0];
        String second = model.expected().get(1)[0];
        Object[] a = model.sqlRow(0);
        Object[] b = model.sqlRow(1);
        String expected = "{\"predictions\": [\"" + first + "\", \"" + second + "\"]}";
        String split = "{\"dataframe_split\": {\"columns\": [\"x3\", \"x1\", \"x2\"], \"data\": [[" + a[2] + ", " + a[0]
                + ", " + a[1] + "], [" + b[2] + ", " + b[0] + ", " + b[1] + "]]}}";
        String records = "[{\"x1\": " + a[0] + ", \"x2\": " + a[1] + ", \"x3\": " + a[2] + ", \"extra\": \"ignored\"},"
                + " {\"x1\": " + b[0] + ", \"x2\": " + b[1] + ", \"x3\": " + b[2] + "}]";
        String columns = "{\"x1\": [" + a[0] + ", " + b[0] + "], \"x2\": [" + a[1] + ", " + b[1] + "], \"x3\": ["
                + a[2] + ", " + b[2] + "]}";
        assertEquals(expected, post("application/json", split).body());
        assertEquals(expected, post("application/json", "{\"dataframe_records\": " + records + "}").body());
        assertEquals(expected, post("application/json", "{\"instances\": " + records + "}").body());
        assertEquals(expected, post("application/json; charset=utf-8", "{\"inputs\": " + columns + "}").body());
        assertEquals(expected, post("text/csv", "x2,x1,x3\n" + a[1] + "," + a[0] + "," + a[2] + "\r\n"
                + b[1] + "," + b[0] + "," + b[2] + "\n").body());
    }

    @Test
    void badInputIsAnMlflowErrorNamingTheProblem() throws Exception {
        assertBadRequest(400, "{\"dataframe_records\": [{\"x1\": 1, \"x2\": 2}]}", "Model is missing inputs ['x3']");
        assertBadRequest(400, "{\"dataframe_records\": [{\"x1\": 1, \"x2\": 2, \"x3\": 3}, {\"x1\": \"a\", \"x2\": 2,"
                + " \"x3\": 3}]}", "column 'x1' at row 1");
        assertBadRequest(400, "{\"dataframe_split\": {\"columns\": [\"x1\", \"x2\", \"x3\"], \"data\": [[1, 2]]}}", "row 0");
        assertBadRequest(400, "{\"dataframe_records\": [{\"x1\": 1", "valid JSON");
        assertBadRequest(400, "{\"rows\": []}", "exactly one of the input fields");
        assertBadRequest(400, "", "empty");
        assertBadRequest(413, "{\"inputs\": {\"x1\": [" + "1,".repeat(3000) + "1]}}", "limit of 4096");
        HttpResponse<String> csv = post("text/csv", "x1,x2,x3\n1,2,\"3\n");
        assertEquals(400, csv.statusCode(), csv.body());
        assertEquals(415, post("application/xml", "<rows/>").statusCode());
        assertEquals(404, get("/score").statusCode());
        assertEquals(405, get("/invocations").statusCode());
    }

    @Test
    void probesVersionAndMetrics() throws Exception {
        assertEquals(200, get("/ping").statusCode());
        assertEquals(200, get("/health").statusCode());
        assertEquals(io.mlmanager.mlrunner.Version.version(), get("/version").body());
        post("application/json", "{\"inputs\": {\"x1\": [1, 2], \"x2\": [1, 2], \"x3\": [1, 2]}}");
        String metrics = get("/metrics").body();
        assertTrue(metrics.contains("mlrunner_requests_total{route=\"/invocations\",status=\"200\"}"), metrics);
        assertTrue(metrics.contains("mlrunner_request_duration_seconds_count"), metrics);
        assertTrue(metrics.contains("model_uri=\"runs:/fixture/logreg\""), metrics);
        assertTrue(metrics.contains("mlrunner_ready 1"), metrics);
    }

    @Test
    void aBundleWithAnotherChecksumIsRefused() throws Exception {
        byte[] bundle = bundle(Fixtures.model("logreg"));
        ModelBundle.ChecksumMismatch refused = assertThrows(ModelBundle.ChecksumMismatch.class,
                () -> ModelBundle.read(bundle, "0".repeat(64)));
        assertTrue(refused.getMessage().contains("refusing to serve it"), refused.getMessage());
    }
}
