package io.mlmanager.mlrunner.gateway;

import io.mlmanager.mlrunner.Version;
import io.mlmanager.mlrunner.cache.ModelCache;
import java.io.IOException;
import java.io.PrintStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import javax.net.ServerSocketFactory;
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
                .serverSocketFactory(new NoDelayServerSocketFactory())
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

    /**
     * Server sockets whose connections send at once (TCP_NODELAY). py4j writes an answer in
     * 8 KB pieces: with Nagle's algorithm each piece after the first waits for the client's
     * delayed ACK, which cost 40-60 ms per call for answers above 8 KB (measured: 100 calls of
     * 1000 rows took 4.5 s).
     */
    static final class NoDelayServerSocketFactory extends ServerSocketFactory {
        @Override
        public ServerSocket createServerSocket() throws IOException {
            return new NoDelayServerSocket();
        }

        @Override
        public ServerSocket createServerSocket(int port) throws IOException {
            return bound(port, 50, null);
        }

        @Override
        public ServerSocket createServerSocket(int port, int backlog) throws IOException {
            return bound(port, backlog, null);
        }

        @Override
        public ServerSocket createServerSocket(int port, int backlog, InetAddress address)
                throws IOException {
            return bound(port, backlog, address);
        }

        private static ServerSocket bound(int port, int backlog, InetAddress address)
                throws IOException {
            ServerSocket socket = new NoDelayServerSocket();
            socket.bind(new java.net.InetSocketAddress(address, port), backlog);
            return socket;
        }
    }

    /** A server socket that turns on TCP_NODELAY for every connection it accepts. */
    static final class NoDelayServerSocket extends ServerSocket {
        NoDelayServerSocket() throws IOException {
            super();
        }

        @Override
        public Socket accept() throws IOException {
            Socket socket = super.accept();
            socket.setTcpNoDelay(true);
            return socket;
        }
    }
}
