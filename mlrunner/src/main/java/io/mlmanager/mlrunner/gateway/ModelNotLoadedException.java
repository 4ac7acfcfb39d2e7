package io.mlmanager.mlrunner.gateway;

/**
 * The model asked for is not in the gateway's cache (never loaded, evicted, or another
 * checksum). The message starts with {@value #PREFIX} so that the Python side calls
 * {@code load()} and retries.
 */
public final class ModelNotLoadedException extends RuntimeException {
    /** How the message starts. */
    public static final String PREFIX = "MODEL_NOT_LOADED:";
    private static final long serialVersionUID = 1L;

    /** An exception naming the model and checksum that are not loaded. */
    public ModelNotLoadedException(String modelId, String checksum) {
        super(PREFIX + " model " + modelId + " with checksum " + checksum
                + " is not loaded in this mlrunner; call load() and retry");
    }
}
