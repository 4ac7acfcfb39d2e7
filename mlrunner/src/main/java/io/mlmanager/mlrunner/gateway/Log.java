package io.mlmanager.mlrunner.gateway;

import java.time.Instant;

/** Timestamped lines on stderr, the gateway's log (stdout carries only the port line). */
final class Log {
    private Log() {}

    static void info(String message) {
        System.err.println(Instant.now() + " mlrunner: " + message);
    }
}
