package io.mlmanager.mlrunner.gateway;

import java.time.Instant;

/** Timestamped lines on stderr, the log of the gateway and of {@code serve} (stdout carries only the port line). */
public final class Log {
    private Log() {}

    public static void info(String message) {
        System.err.println(Instant.now() + " mlrunner: " + message);
    }
}
