package io.mlmanager.mlrunner.gateway;

import io.mlmanager.mlrunner.Flags;
import io.mlmanager.mlrunner.cache.ModelCache;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

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
        for (Map.Entry<String, String> pair : Flags.pairs(args)) {
            String flag = pair.getKey();
            String value = pair.getValue();
            switch (flag) {
                case "--port":
                    port = (int) Flags.integer(flag, value, 0, 65535);
                    break;
                case "--port-file":
                    portFile = Path.of(value);
                    break;
                case "--cache-size":
                    cacheSize = (int) Flags.integer(flag, value, 1, 1_000_000);
                    break;
                default:
                    throw new IllegalArgumentException("unknown option " + flag);
            }
        }
        return new GatewayOptions(port, portFile, cacheSize);
    }
}
