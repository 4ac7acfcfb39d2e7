package io.mlmanager.mlrunner;

import io.mlmanager.mlrunner.gateway.GatewayOptions;
import io.mlmanager.mlrunner.gateway.GatewayServers;
import io.mlmanager.mlrunner.gateway.Log;
import io.mlmanager.mlrunner.serve.ModelBundle;
import io.mlmanager.mlrunner.serve.ModelSource;
import io.mlmanager.mlrunner.serve.ScoringServer;
import io.mlmanager.mlrunner.serve.ServeOptions;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import py4j.GatewayServer;

/**
 * The command line: {@code java -jar mlrunner.jar version | gateway [flags] | serve [flags]}.
 *
 * <p>{@link #run} returns the exit code instead of exiting, so tests can call it. The gateway
 * and the scoring server keep the JVM alive on their server threads until the process is stopped.
 */
public final class Main {
    /** Exit code for a bad command line or a missing token. */
    public static final int USAGE_ERROR = 2;

    static final String USAGE = "usage: java -jar mlrunner.jar <command>\n"
            + "  version\n"
            + "      print the version\n"
            + GatewayOptions.USAGE
            + ServeOptions.USAGE;

    private Main() {}

    /** Runs the command line and exits with its code (unless a gateway is left serving). */
    public static void main(String[] args) {
        int code = run(args, System.getenv(), System.out, System.err);
        if (code != 0) {
            System.exit(code);
        }
    }

    /**
     * Runs one command.
     *
     * @return the exit code: 0 on success (a gateway or scoring server is then serving), 2 for
     *     a bad command line or token, 1 when the gateway or the scoring server cannot start
     *     (for {@code serve}: also a model that cannot be fetched, fails its checksum or does not load)
     */
    public static int run(String[] args, Map<String, String> environment, PrintStream out, PrintStream err) {
        if (args.length == 0) {
            err.print(USAGE);
            return USAGE_ERROR;
        }
        List<String> rest = Arrays.asList(args).subList(1, args.length);
        switch (args[0]) {
            case "version":
            case "--version":
                out.println(Version.version());
                return 0;
            case "help":
            case "--help":
            case "-h":
                out.print(USAGE);
                return 0;
            case "gateway":
                return gateway(rest, environment, out, err);
            case "serve":
                return serve(rest, environment, out, err);
            default:
                err.println("mlrunner: unknown command " + args[0]);
                err.print(USAGE);
                return USAGE_ERROR;
        }
    }

    private static int gateway(List<String> args, Map<String, String> environment, PrintStream out, PrintStream err) {
        GatewayOptions options;
        try {
            options = GatewayOptions.parse(args);
        } catch (IllegalArgumentException e) {
            err.println("mlrunner: " + e.getMessage());
            err.print(USAGE);
            return USAGE_ERROR;
        }
        String token = environment.get(GatewayServers.TOKEN_VARIABLE);
        String problem = GatewayServers.tokenProblem(token);
        if (problem != null) {
            err.println("mlrunner: " + problem);
            return USAGE_ERROR;
        }
        try {
            GatewayServer server = GatewayServers.start(options, token, out);
            Runtime.getRuntime().addShutdownHook(new Thread(server::shutdown, "mlrunner-shutdown"));
            return 0;
        } catch (IOException | RuntimeException e) {
            err.println("mlrunner: the gateway cannot start: " + e);
            return 1;
        }
    }

    private static int serve(List<String> args, Map<String, String> environment, PrintStream out, PrintStream err) {
        long started = System.nanoTime();
        ServeOptions options;
        String token;
        try {
            options = ServeOptions.parse(args);
            token = options.tokenFile() != null
                    ? Files.readString(options.tokenFile(), StandardCharsets.UTF_8).strip()
                    : environment.get(options.tokenVariable());
        } catch (IllegalArgumentException e) {
            err.println("mlrunner: " + e.getMessage());
            err.print(USAGE);
            return USAGE_ERROR;
        } catch (IOException e) {
            err.println("mlrunner: cannot read the token file: " + e);
            return USAGE_ERROR;
        }
        ScoringServer server;
        try {
            server = ScoringServer.start(options);
        } catch (IOException | RuntimeException e) {
            err.println("mlrunner: cannot listen on " + options.host() + ":" + options.port() + ": " + e);
            return 1;
        }
        try {
            byte[] bundle = ModelSource.fetch(options, token);
            server.load(ModelBundle.read(bundle, options.sha256()));
            if (options.portFile() != null) {
                Path staging = Files.createTempFile(options.portFile().toAbsolutePath().getParent(), ".port", ".tmp");
                Files.writeString(staging, server.port() + "\n", StandardCharsets.UTF_8);
                Files.move(staging, options.portFile(), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            }
        } catch (ModelBundle.ChecksumMismatch | IOException | RuntimeException e) {
            server.close();
            err.println("mlrunner: " + (e instanceof ModelBundle.ChecksumMismatch || e instanceof IllegalArgumentException
                    ? e.getMessage() : e.toString()));
            return 1;
        }
        Runtime.getRuntime().addShutdownHook(new Thread(server::drain, "mlrunner-drain"));
        out.println("MLRUNNER_PORT " + server.port());
        out.flush();
        Log.info(Version.summary() + " serving " + options.model() + " on " + options.host() + ":" + server.port()
                + " with " + options.threads() + " threads, ready in "
                + (System.nanoTime() - started) / 1_000_000 + " ms (pid " + ProcessHandle.current().pid() + ")");
        return 0;
    }
}
