package io.mlmanager.mlrunner;

import io.mlmanager.mlrunner.gateway.GatewayOptions;
import io.mlmanager.mlrunner.gateway.GatewayServers;
import java.io.IOException;
import java.io.PrintStream;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import py4j.GatewayServer;

/**
 * The command line: {@code java -jar mlrunner.jar version | gateway [flags]}.
 *
 * <p>{@link #run} returns the exit code instead of exiting, so tests can call it. The gateway
 * keeps the JVM alive on its server thread until the process is stopped.
 */
public final class Main {
    /** Exit code for a bad command line or a missing token. */
    public static final int USAGE_ERROR = 2;

    static final String USAGE = "usage: java -jar mlrunner.jar <command>\n"
            + "  version\n"
            + "      print the version\n"
            + GatewayOptions.USAGE;

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
     * @return the exit code: 0 on success (a gateway is then serving), 2 for a bad command
     *     line or token, 1 when the gateway cannot start
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
}
