package io.mlmanager.mlrunner.gateway;

import io.mlmanager.mlrunner.Version;
import io.mlmanager.mlrunner.cache.ModelCache;
import java.io.IOException;
import java.io.PrintStream;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import py4j.GatewayServer;

/** Starting the py4j gateway on the loopback address, and announcing its port. */
public final class GatewayServers {
    /** The environment variable holding the auth token. */
    public static final String TOKEN_VARIABLE = "MLRUNNER_TOKEN";
    /** The shortest token accepted. */
    public static final int MIN_TOKEN_LENGTH = 16;

    private GatewayServers() {}

    /**
     * Whether {@code token} is acceptable; the reason it is not otherwise, without the token
     * itself.
     */
    public static String tokenProblem(String token) {
        if (token == null || token.isEmpty()) {
            return TOKEN_VARIABLE + " is not set: the gateway needs an auth token (at least "
                    + MIN_TOKEN_LENGTH + " characters) that its Python clients share";
        }
        if (token.length() < MIN_TOKEN_LENGTH) {
            return TOKEN_VARIABLE + " is too short (" + token.length() + " characters): use a random secret of at least "
                    + MIN_TOKEN_LENGTH;
        }
        return null;
    }

    /**
     * Starts a gateway serving a new {@link Gateway} entry point on 127.0.0.1, writes the
     * port to the port file (if any) and prints {@code MLRUNNER_PORT <port>} on {@code out}.
     *
     * @throws IOException if the port file cannot be written (the server is shut down then)
     */
    public static GatewayServer start(GatewayOptions options, String token, PrintStream out) throws IOException {
        if (tokenProblem(token) != null) {
            throw new IllegalArgumentException(tokenProblem(token));
        }
        GatewayServer server = new GatewayServer.GatewayServerBuilder()
                .entryPoint(new Gateway(new ModelCache(options.cacheSize())))
                .javaPort(options.port())
                .javaAddress(InetAddress.getLoopbackAddress())
                .authToken(token)
                .build();
        server.start();
        int port = server.getListeningPort();
        try {
            if (options.portFile() != null) {
                writeAtomically(options.portFile(), port + "\n");
            }
        } catch (IOException | RuntimeException e) {
            server.shutdown();
            throw e;
        }
        out.println("MLRUNNER_PORT " + port);
        out.flush();
        Log.info(Version.summary() + " listening on 127.0.0.1:" + port + ", cache of "
                + options.cacheSize() + " models, pid " + ProcessHandle.current().pid());
        return server;
    }

    /** Writes {@code text} to a temporary file beside {@code target}, then moves it there atomically. */
    static void writeAtomically(Path target, String text) throws IOException {
        Path absolute = target.toAbsolutePath();
        Path staging = Files.createTempFile(absolute.getParent(), "." + absolute.getFileName(), ".tmp");
        try {
            Files.writeString(staging, text, StandardCharsets.UTF_8);
            Files.move(staging, absolute, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } finally {
            Files.deleteIfExists(staging);
        }
    }
}
