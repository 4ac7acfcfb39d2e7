package io.mlmanager.mlrunner.serve;

/**
 * A request the server refuses, answered with MLflow's error JSON
 * ({@code {"error_code": "BAD_REQUEST", "message": ...}}) and {@link #status()}.
 */
public final class BadRequest extends RuntimeException {
    private static final long serialVersionUID = 1L;
    private final int status;

    /** A 400 with this message. */
    public BadRequest(String message) {
        this(400, message);
    }

    /** An answer with this status and message. */
    public BadRequest(int status, String message) {
        super(message, null, false, false);
        this.status = status;
    }

    /** The HTTP status to answer with. */
    public int status() {
        return status;
    }
}
