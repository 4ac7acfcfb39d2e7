package io.mlmanager.mlrunner;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mlmanager.mlrunner.gateway.GatewayOptions;
import io.mlmanager.mlrunner.gateway.GatewayServers;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.net.InetAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import py4j.GatewayServer;

/** The command line, through {@link Main#run} (which returns the exit code). */
class MainTest {
    private final ByteArrayOutputStream out = new ByteArrayOutputStream();
    private final ByteArrayOutputStream err = new ByteArrayOutputStream();

    private int run(Map<String, String> environment, String... args) {
        return Main.run(args, environment, new PrintStream(out, true, StandardCharsets.UTF_8),
                new PrintStream(err, true, StandardCharsets.UTF_8));
    }

    private String err() {
        return err.toString(StandardCharsets.UTF_8);
    }

    @Test
    void printsTheVersion() {
        assertEquals(0, run(Map.of(), "version"));
        assertEquals(Version.version() + "\n", out.toString(StandardCharsets.UTF_8));
    }

    @Test
    void refusesAMissingToken() {
        assertEquals(2, run(Map.of(), "gateway", "--port", "0"));
        assertTrue(err().contains("MLRUNNER_TOKEN is not set"), err());
        assertEquals("", out.toString(StandardCharsets.UTF_8));
    }

    @Test
    void refusesAShortTokenWithoutPrintingIt() {
        assertEquals(2, run(Map.of("MLRUNNER_TOKEN", "short-secret"), "gateway"));
        assertTrue(err().contains("MLRUNNER_TOKEN is too short"), err());
        assertFalse(err().contains("short-secret"), err());
    }

    @Test
    void unknownCommandsAndFlagsShowTheUsage() {
        assertEquals(2, run(Map.of(), "score"));
        assertTrue(err().contains("unknown command score") && err().contains("usage:"), err());
        assertEquals(2, run(Map.of(), "gateway", "--port", "http"));
        assertTrue(err().contains("--port must be an integer from 0 to 65535, not http"), err());
        assertEquals(2, run(Map.of(), "gateway", "--cache-size"));
        assertTrue(err().contains("--cache-size needs a value"), err());
        assertEquals(2, run(Map.of(), "gateway", "--verbose", "1"));
        assertTrue(err().contains("unknown option --verbose"), err());
        assertEquals(2, run(Map.of()));
    }

    @Test
    void parsesGatewayOptions() {
        GatewayOptions options = GatewayOptions.parse(java.util.List.of("--port=5", "--port-file", "/tmp/p",
                "--cache-size", "3"));
        assertEquals(new GatewayOptions(5, Path.of("/tmp/p"), 3), options);
        assertEquals(new GatewayOptions(0, null, 16), GatewayOptions.parse(java.util.List.of()));
    }

    @Test
    void startsOnLoopbackAndWritesThePortFile(@TempDir Path directory) throws Exception {
        Path portFile = directory.resolve("port");
        GatewayServer server = GatewayServers.start(new GatewayOptions(0, portFile, 4),
                "0123456789abcdef0123", new PrintStream(out, true, StandardCharsets.UTF_8));
        try {
            int port = server.getListeningPort();
            assertTrue(port > 0);
            assertEquals(port + "\n", Files.readString(portFile));
            assertEquals("MLRUNNER_PORT " + port + "\n", out.toString(StandardCharsets.UTF_8));
            assertEquals(InetAddress.getLoopbackAddress(), server.getAddress());
            try (Socket socket = new Socket(InetAddress.getLoopbackAddress(), port)) {
                assertTrue(socket.isConnected());
            }
            try (var files = Files.list(directory)) {
                assertEquals(1, files.count(), "the temporary port file is left behind");
            }
        } finally {
            server.shutdown();
        }
    }
}
