package io.mlmanager.mlrunner.serve;

import io.mlmanager.mlrunner.Flags;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The flags of {@code mlrunner serve}.
 *
 * @param model a file path, or an {@code http(s)://} URL fetched once at start
 * @param sha256 the expected lower-case hex SHA-256 of the model bundle's bytes
 * @param host the address to listen on
 * @param port the port to listen on, 0 for an ephemeral one
 * @param threads request threads (each scores one request at a time)
 * @param maxBodyBytes the largest request body accepted; a larger one is answered 413
 * @param graceSeconds how long SIGTERM waits for requests in flight
 * @param tokenVariable the environment variable holding the bearer token for a model URL
 * @param tokenFile a file holding that token instead (read at start), or null
 * @param portFile where to write the port once listening, or null
 */
public record ServeOptions(String model, String sha256, String host, int port, int threads,
        long maxBodyBytes, int graceSeconds, String tokenVariable, Path tokenFile, Path portFile) {

    /** The default token variable. */
    public static final String TOKEN_VARIABLE = "MLRUNNER_MODEL_TOKEN";
    /** The default body limit: 64 MiB, about 500,000 rows of 20 numbers as JSON. */
    public static final long DEFAULT_MAX_BODY_BYTES = 64L << 20;

    /** The flags' usage lines. */
    public static final String USAGE =
            "  serve --model FILE|URL --sha256 HEX [--port 8080] [--host 0.0.0.0] [--threads N]\n"
            + "        [--max-body-bytes N] [--grace-seconds 20] [--token-env NAME] [--token-file PATH]\n"
            + "        [--port-file PATH]\n"
            + "      serve one model bundle over HTTP with MLflow's scoring protocol:\n"
            + "      POST /invocations, GET /ping /health /version /metrics\n"
            + "      --model          the bundle (`mlmanager serve` and the model route write it);\n"
            + "                       a URL is fetched with the bearer token of --token-env\n"
            + "                       (default " + TOKEN_VARIABLE + ") or --token-file\n"
            + "      --sha256         refuse to start unless the bundle has this SHA-256\n"
            + "      --threads N      request threads (default: the processors)\n"
            + "      --max-body-bytes bodies above this are answered 413 (default "
            + DEFAULT_MAX_BODY_BYTES + ")\n"
            + "      --grace-seconds  on SIGTERM, how long requests in flight may finish (default 20)\n";

    /**
     * Parses the flags that follow {@code serve}.
     *
     * @throws IllegalArgumentException for an unknown flag, a missing or bad value
     */
    public static ServeOptions parse(List<String> args) {
        String model = null;
        String sha256 = null;
        String host = "0.0.0.0";
        int port = 8080;
        int threads = Runtime.getRuntime().availableProcessors();
        long maxBody = DEFAULT_MAX_BODY_BYTES;
        int grace = 20;
        String tokenVariable = TOKEN_VARIABLE;
        Path tokenFile = null;
        Path portFile = null;
        for (Map.Entry<String, String> pair : Flags.pairs(args)) {
            String flag = pair.getKey();
            String value = pair.getValue();
            switch (flag) {
                case "--model" -> model = value;
                case "--sha256" -> sha256 = value.trim().toLowerCase(Locale.ROOT);
                case "--host" -> host = value;
                case "--port" -> port = (int) Flags.integer(flag, value, 0, 65535);
                case "--threads" -> threads = (int) Flags.integer(flag, value, 1, 1024);
                case "--max-body-bytes" -> maxBody = Flags.integer(flag, value, 1, Integer.MAX_VALUE - 8);
                case "--grace-seconds" -> grace = (int) Flags.integer(flag, value, 0, 3600);
                case "--token-env" -> tokenVariable = value;
                case "--token-file" -> tokenFile = Path.of(value);
                case "--port-file" -> portFile = Path.of(value);
                default -> throw new IllegalArgumentException("unknown option " + flag);
            }
        }
        if (model == null || model.isBlank()) {
            throw new IllegalArgumentException("serve needs --model FILE|URL");
        }
        if (sha256 == null || !sha256.matches("[0-9a-f]{64}")) {
            throw new IllegalArgumentException("serve needs --sha256 with the 64 hex digits of the bundle's SHA-256");
        }
        return new ServeOptions(model, sha256, host, port, threads, maxBody, grace, tokenVariable, tokenFile,
                portFile);
    }

    /** Whether {@link #model} is a URL rather than a file. */
    public boolean modelIsUrl() {
        String lower = model.toLowerCase(Locale.ROOT);
        return lower.startsWith("http://") || lower.startsWith("https://");
    }
}
