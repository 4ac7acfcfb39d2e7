package io.mlmanager.mlrunner.cache;

/** A cached model was used after the cache evicted or replaced it: load it again. */
public final class ModelClosedException extends IllegalStateException {
    private static final long serialVersionUID = 1L;

    /** An exception naming the model that is gone. */
    public ModelClosedException(String modelId) {
        super("model " + modelId + " was evicted from the model cache while in use; load it again");
    }
}
