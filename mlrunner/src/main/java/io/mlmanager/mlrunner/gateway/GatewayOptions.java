package io.mlmanager.mlrunner.gateway;

import io.mlmanager.mlrunner.cache.ModelCache;
import java.nio.file.Path;
import java.util.List;

/**
 * The flags of {@code mlrunner gateway}.
 *
 * @param port the port to listen on, 0 for an ephemeral one
 * @param portFile where to write the port once listening, or null
 * @param cacheSize how many models to keep loaded
 */
public record GatewayOptions(int port, Path portFile, int cacheSize) {

    /** The flags' usage lines. */
    public static final String USAGE =
            "  gateway [--port N] [--port-file PATH] [--cache-size N]\n"
            + "      serve models to Python over py4j on 127.0.0.1; the auth token is read from\n"
            + "      the environment variable MLRUNNER_TOKEN (at least 16 characters)\n"
            + "      --port N         port to listen on (default 0: any free port)\n"
            + "      --port-file PATH write the port there (atomically) once listening\n"
            + "      --cache-size N   models kept loaded, least recently used evicted (default "
            + ModelCache.DEFAULT_CAPACITY + ")\n";

    /**
     * Parses the flags that follow {@code gateway}.
     *
     * @throws IllegalArgumentException for an unknown flag, a missing or bad value
     */
    public static GatewayOptions parse(List<String> args) {
        int port = 0;
        Path portFile = null;
        int cacheSize = ModelCache.DEFAULT_CAPACITY;
        for (int i = 0; i < args.size(); i++) {
            String flag = args.get(i);
            String value;
            int equals = flag.indexOf('=');
            if (flag.startsWith("--") && equals > 0) {
                value = flag.substring(equals + 1);
                flag = flag.substring(0, equals);
            } else {
                if (i + 1 >= args.size()) {
                    throw new IllegalArgumentException(flag.startsWith("--")
                            ? flag + " needs a value" : "unexpected argument " + flag);
                }
                value = args.get(++i);
            }
            switch (flag) {
                case "--port":
                    port = integer(flag, value, 0, 65535);
                    break;
                case "--port-file":
                    portFile = Path.of(value);
                    break;
                case "--cache-size":
                    cacheSize = integer(flag, value, 1, 1_000_000);
                    break;
                default:
                    throw new IllegalArgumentException("unknown option " + flag);
            }
        }
        return new GatewayOptions(port, portFile, cacheSize);
    }

    private static int integer(String flag, String value, int min, int max) {
        try {
            int number = Integer.parseInt(value.trim());
            if (number >= min && number <= max) {
                return number;
            }
        } catch (NumberFormatException e) {
            // reported below
        }
        throw new IllegalArgumentException(flag + " must be an integer from " + min + " to " + max
                + ", not " + value);
    }
}
