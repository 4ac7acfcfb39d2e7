package io.mlmanager.mlrunner.serve;

import com.google.gson.JsonObject;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import io.mlmanager.mlrunner.Version;
import io.mlmanager.mlrunner.block.Column;
import io.mlmanager.mlrunner.block.ColumnBlock;
import io.mlmanager.mlrunner.cache.ModelCache;
import io.mlmanager.mlrunner.cache.ModelClosedException;
import io.mlmanager.mlrunner.gateway.Log;
import io.mlmanager.mlrunner.runner.InputColumn;
import io.mlmanager.mlrunner.runner.Runner;
import io.mlmanager.mlrunner.runner.Runners;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * MLflow's scoring protocol over HTTP for one model: {@code POST /invocations}, {@code GET /ping},
 * {@code /health}, {@code /version} and {@code /metrics}.
 *
 * <p>The HTTP layer is the JDK's own {@code com.sun.net.httpserver} on a fixed pool of request
 * threads: no dependency, and one ONNX session (thread-safe, one intra-op thread) scores on
 * every request thread at once. It listens before the model is loaded, so that a readiness probe
 * sees 503 until the model is loaded and has scored one sample row; then 200.
 *
 * <p>{@link #drain()} (on SIGTERM) answers new requests 503 with {@code Connection: close}, lets
 * the requests in flight finish for up to the grace period, then stops and closes the model.
 */
public final class ScoringServer {
    private static final String JSON = "application/json";
    private final HttpServer server;
    private final ExecutorService executor;
    private final ServeOptions options;
    /**
     * The route of the exchange this handler thread answers, until it is counted in the metrics
     * (a thread answers one exchange at a time; HttpExchange attributes are shared by the whole
     * context in the JDK's server, so they cannot carry it).
     */
    private static final ThreadLocal<String> UNCOUNTED = new ThreadLocal<>();
    private final Metrics metrics = new Metrics();
    private final ModelCache cache = new ModelCache(1);
    private final AtomicInteger inFlight = new AtomicInteger();
    private volatile Served served;
    private volatile boolean draining;

    /** The model being served, with what reads its requests and writes its answers. */
    private record Served(Runner runner, RequestReader reader, PredictionWriter writer) {}

    private ScoringServer(ServeOptions options) throws IOException {
        // Without TCP_NODELAY the headers and the body go out in two packets and the second waits
        // for the client's delayed ACK: 40 ms per keep-alive request.
        System.setProperty("sun.net.httpserver.nodelay", "true");
        this.options = options;
        this.server = HttpServer.create(new InetSocketAddress(options.host(), options.port()), 1024);
        AtomicInteger threadNumber = new AtomicInteger();
        this.executor = Executors.newFixedThreadPool(options.threads(), task -> {
            Thread thread = new Thread(task, "mlrunner-http-" + threadNumber.incrementAndGet());
            thread.setDaemon(true);
            return thread;
        });
        server.setExecutor(executor);
        server.createContext("/", this::handle);
    }

    /** Listens on the options' host and port (the model is not loaded yet: /ping answers 503). */
    public static ScoringServer start(ServeOptions options) throws IOException {
        ScoringServer scoring = new ScoringServer(options);
        scoring.server.start();
        return scoring;
    }

    /** The port listened on. */
    public int port() {
        return server.getAddress().getPort();
    }

    /**
     * Loads the bundle's model, scores one sample row with it, then answers requests.
     *
     * @throws IllegalArgumentException if the model does not load or cannot score the sample row
     */
    public void load(ModelBundle bundle) {
        Runner runner = cache.put(bundle.modelUri(), bundle.payloadSha256(),
                Runners.load(bundle.format(), bundle.payload(), bundle.onnxMetadata()));
        try {
            runner.score(sampleRow(runner));
        } catch (RuntimeException e) {
            throw new IllegalArgumentException("the model loaded but cannot score a sample row: " + e.getMessage(), e);
        }
        metrics.model(Map.of("model_uri", bundle.modelUri(), "sha256", bundle.payloadSha256(),
                "format", bundle.format(), "kind", bundle.kind()));
        served = new Served(runner, new RequestReader(bundle.inputs()), new PredictionWriter(runner));
    }

    /** One row of zeros and empty texts, the readiness check's sample. */
    private static ColumnBlock sampleRow(Runner runner) {
        List<Column> columns = new ArrayList<>();
        for (InputColumn input : runner.inputs()) {
            columns.add(input.numeric() ? new Column.Float64(input.name(), new double[] {0})
                    : new Column.Text(input.name(), new String[] {""}));
        }
        return new ColumnBlock(1, columns);
    }

    /**
     * Stops taking requests (new ones get 503), waits up to the grace period for the requests in
     * flight, then stops listening and frees the model.
     */
    public void drain() {
        draining = true;
        Log.info("draining: " + inFlight.get() + " requests in flight, grace " + options.graceSeconds() + " s");
        // Waited here, not by HttpServer.stop(grace): on Java 17 that always sleeps the whole grace
        // period, even with nothing in flight (JDK-8304065, fixed in 21).
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(options.graceSeconds());
        while (inFlight.get() > 0 && System.nanoTime() < deadline) {
            try {
                Thread.sleep(10);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        int left = inFlight.get();
        server.stop(0);
        executor.shutdownNow();
        cache.close();
        Log.info(left == 0 ? "stopped" : "stopped with " + left + " requests unfinished after the grace period");
    }

    /** Stops at once (a model that could not be loaded). */
    public void close() {
        draining = true;
        server.stop(0);
        executor.shutdownNow();
        cache.close();
    }

    private void handle(HttpExchange exchange) throws IOException {
        inFlight.incrementAndGet();
        String path = exchange.getRequestURI().getPath();
        String route = switch (path) {
            case "/invocations", "/ping", "/health", "/version", "/metrics" -> path;
            default -> "other";
        };
        UNCOUNTED.set(route);
        int status;
        try {
            status = respond(exchange, path);
        } catch (BadRequest e) {
            status = error(exchange, e.status(), "BAD_REQUEST", e.getMessage());
        } catch (IOException e) {
            status = 499; // the client went away
        } catch (RuntimeException e) {
            Log.info("internal error on " + path + ": " + e);
            status = error(exchange, 500, "INTERNAL_ERROR", "mlrunner failed: " + e);
        } finally {
            exchange.close();
            inFlight.decrementAndGet();
        }
        if (UNCOUNTED.get() != null) {
            UNCOUNTED.remove();
            metrics.request(route, status); // nothing was sent (the client went away)
        }
    }

    private int respond(HttpExchange exchange, String path) throws IOException {
        String method = exchange.getRequestMethod();
        boolean post = path.equals("/invocations");
        if (!route(path)) {
            return error(exchange, 404, "ENDPOINT_NOT_FOUND", "no route " + path
                    + " (routes: POST /invocations, GET /ping /health /version /metrics)");
        }
        if (!method.equals(post ? "POST" : "GET") && !(method.equals("HEAD") && !post)) {
            exchange.getResponseHeaders().set("Allow", post ? "POST" : "GET");
            return error(exchange, 405, "BAD_REQUEST", path + " answers " + (post ? "POST" : "GET") + ", not " + method);
        }
        if (draining) {
            exchange.getResponseHeaders().set("Connection", "close");
            return error(exchange, 503, "TEMPORARILY_UNAVAILABLE", "the server is shutting down");
        }
        switch (path) {
            case "/ping":
            case "/health":
                if (served == null) {
                    return error(exchange, 503, "TEMPORARILY_UNAVAILABLE", "the model is not loaded yet");
                }
                return send(exchange, 200, JSON, "\n".getBytes(StandardCharsets.UTF_8));
            case "/version":
                return send(exchange, 200, JSON, Version.version().getBytes(StandardCharsets.UTF_8));
            case "/metrics":
                return send(exchange, 200, "text/plain; version=0.0.4; charset=utf-8",
                        metrics.render(served != null).getBytes(StandardCharsets.UTF_8));
            default:
                return invocations(exchange);
        }
    }

    private static boolean route(String path) {
        return switch (path) {
            case "/invocations", "/ping", "/health", "/version", "/metrics" -> true;
            default -> false;
        };
    }

    private int invocations(HttpExchange exchange) throws IOException {
        long started = System.nanoTime();
        Served model = served;
        if (model == null) {
            return error(exchange, 503, "TEMPORARILY_UNAVAILABLE", "the model is not loaded yet");
        }
        byte[] body = body(exchange);
        ColumnBlock inputs = model.reader().read(body, exchange.getRequestHeaders().getFirst("Content-Type"));
        ColumnBlock outputs;
        try {
            outputs = model.runner().score(inputs);
        } catch (ModelClosedException e) {
            return error(exchange, 503, "TEMPORARILY_UNAVAILABLE", "the server is shutting down");
        } catch (IllegalArgumentException e) {
            throw new BadRequest("Encountered an error while scoring the input: " + e.getMessage());
        }
        byte[] answer = model.writer().write(outputs);
        // Recorded before the answer leaves, so a scrape right after a response includes it.
        metrics.invocation(System.nanoTime() - started, inputs.rows());
        return send(exchange, 200, JSON, answer);
    }

    /** The request body, refused with 413 beyond the limit (before reading it when its length is declared). */
    private byte[] body(HttpExchange exchange) throws IOException {
        long limit = options.maxBodyBytes();
        String declared = exchange.getRequestHeaders().getFirst("Content-Length");
        long length = -1;
        if (declared != null) {
            try {
                length = Long.parseLong(declared.trim());
            } catch (NumberFormatException e) {
                throw new BadRequest("Content-Length is not a number: " + declared);
            }
            if (length > limit) {
                exchange.getResponseHeaders().set("Connection", "close");
                throw new BadRequest(413, "The request body holds " + length + " bytes, more than the limit of "
                        + limit + " (--max-body-bytes): send fewer rows per request");
            }
        }
        try (InputStream in = exchange.getRequestBody()) {
            if (length >= 0) {
                // Read into one array of the declared size (readNBytes(limit) gathers 8 KB chunks, then copies).
                byte[] body = new byte[(int) length];
                int read = in.readNBytes(body, 0, body.length);
                return read == body.length ? body : Arrays.copyOf(body, read);
            }
            byte[] body = in.readNBytes((int) limit + 1);
            if (body.length > limit) {
                exchange.getResponseHeaders().set("Connection", "close");
                throw new BadRequest(413, "The request body holds more than the limit of " + limit
                        + " bytes (--max-body-bytes): send fewer rows per request");
            }
            return body;
        }
    }

    private int error(HttpExchange exchange, int status, String code, String message) {
        JsonObject error = new JsonObject();
        error.addProperty("error_code", code);
        error.addProperty("message", message);
        try {
            return send(exchange, status, JSON, error.toString().getBytes(StandardCharsets.UTF_8));
        } catch (IOException e) {
            return status;
        }
    }

    private int send(HttpExchange exchange, int status, String contentType, byte[] body) throws IOException {
        // Counted before the answer leaves: a client that reads /metrics right after its
        // response sees that response counted.
        String route = UNCOUNTED.get();
        if (route != null) {
            UNCOUNTED.remove();
            metrics.request(route, status);
        }
        exchange.getResponseHeaders().set("Content-Type", contentType);
        boolean head = exchange.getRequestMethod().equals("HEAD");
        exchange.sendResponseHeaders(status, head ? -1 : body.length);
        if (!head) {
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(body);
            }
        }
        return status;
    }
}
