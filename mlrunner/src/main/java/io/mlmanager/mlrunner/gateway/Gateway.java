package io.mlmanager.mlrunner.gateway;

import com.google.gson.JsonObject;
import io.mlmanager.mlrunner.Version;
import io.mlmanager.mlrunner.block.ColumnBlock;
import io.mlmanager.mlrunner.cache.ModelCache;
import io.mlmanager.mlrunner.cache.ModelClosedException;
import io.mlmanager.mlrunner.runner.Runner;
import io.mlmanager.mlrunner.runner.Runners;
import java.util.Locale;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The py4j entry point: what Python's {@code gateway.entry_point} calls.
 *
 * <p>Models are loaded once with {@link #load} and then scored by (model id, checksum) with
 * packed blocks ({@link ColumnBlock}). A model that is not cached, or no longer, makes
 * {@link #score} and {@link #describe} throw a {@link ModelNotLoadedException}, whose message
 * starts with {@code MODEL_NOT_LOADED:}. Other failures are {@link IllegalArgumentException}s
 * that say what is wrong. Every method is safe to call from several connections at once.
 */
public final class Gateway {
    private final ModelCache cache;
    private final AtomicLong rowsScored = new AtomicLong();
    private final AtomicLong batchesScored = new AtomicLong();

    /** An entry point serving the models of {@code cache}. */
    public Gateway(ModelCache cache) {
        this.cache = cache;
    }

    /** mlrunner's version. */
    public String version() {
        return Version.version();
    }

    /** Whether this model id is loaded with this checksum. */
    public boolean has(String modelId, String checksum) {
        return cache.get(modelId, normalize(checksum)) != null;
    }

    /**
     * Loads a model (or finds it loaded) and describes it.
     *
     * @param checksum the lower-case hex SHA-256 of {@code payload}, which is verified
     * @param format {@code mojo} or {@code onnx}
     * @param metadataJson for ONNX, {@code {"kind", "inputs", "classes"}}; may be null for a MOJO
     * @return the JSON description, as {@link #describe}
     */
    public String load(String modelId, String checksum, String format, byte[] payload, String metadataJson) {
        require(modelId, "model id");
        require(checksum, "checksum");
        if (payload == null) {
            throw new IllegalArgumentException("model " + modelId + ": the payload is null");
        }
        String actual = Runners.sha256(payload);
        if (!actual.equals(normalize(checksum))) {
            throw new IllegalArgumentException("model " + modelId + ": the payload's sha256 is " + actual
                    + ", not the checksum " + checksum + " it was sent with");
        }
        Runner cached = cache.get(modelId, actual);
        if (cached != null) {
            return Runners.describe(cached);
        }
        long start = System.nanoTime();
        Runner runner;
        try {
            runner = Runners.load(format, payload, metadataJson);
        } catch (RuntimeException e) {
            throw new IllegalArgumentException("model " + modelId + ": " + e.getMessage(), e);
        }
        cache.put(modelId, actual, runner);
        Log.info(String.format(Locale.ROOT, "loaded model %s (%s %s, %d bytes, sha256 %s) in %d ms",
                modelId, format, runner.kind().label(), payload.length, actual.substring(0, 12),
                (System.nanoTime() - start) / 1_000_000));
        return Runners.describe(runner);
    }

    /**
     * Scores a packed block of rows with a loaded model.
     *
     * @return the packed predictions: {@code PREDICTION} (and per-class probabilities)
     * @throws ModelNotLoadedException if the model is not loaded with this checksum
     */
    public byte[] score(String modelId, String checksum, byte[] packedBlock) {
        Runner runner = loaded(modelId, checksum);
        ColumnBlock inputs = ColumnBlock.fromBytes(packedBlock);
        ColumnBlock outputs;
        try {
            outputs = runner.score(inputs);
        } catch (ModelClosedException e) {
            throw new ModelNotLoadedException(modelId, checksum);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("model " + modelId + ": " + e.getMessage(), e);
        }
        batchesScored.incrementAndGet();
        rowsScored.addAndGet(inputs.rows());
        return outputs.toBytes();
    }

    /**
     * The JSON description of a loaded model: {@code {"format", "kind", "inputs": [{"name",
     * "type": "numeric"|"text"}], "classes": [...], "outputs": [{"name", "type"}]}}.
     *
     * @throws ModelNotLoadedException if the model is not loaded with this checksum
     */
    public String describe(String modelId, String checksum) {
        return Runners.describe(loaded(modelId, checksum));
    }

    /** JSON counters: cache size, capacity, loads, evictions, replacements, batches and rows scored. */
    public String stats() {
        JsonObject stats = new JsonObject();
        stats.addProperty("size", cache.size());
        stats.addProperty("capacity", cache.capacity());
        stats.addProperty("loads", cache.loads());
        stats.addProperty("evictions", cache.evictions());
        stats.addProperty("replacements", cache.replacements());
        stats.addProperty("batches_scored", batchesScored.get());
        stats.addProperty("rows_scored", rowsScored.get());
        return stats.toString();
    }

    /** This JVM's process id. */
    public int pid() {
        return (int) ProcessHandle.current().pid();
    }

    private Runner loaded(String modelId, String checksum) {
        Runner runner = cache.get(modelId, normalize(checksum));
        if (runner == null) {
            throw new ModelNotLoadedException(modelId, checksum);
        }
        return runner;
    }

    private static String normalize(String checksum) {
        return checksum == null ? null : checksum.trim().toLowerCase(Locale.ROOT);
    }

    private static void require(String value, String what) {
        if (value == null || value.isEmpty()) {
            throw new IllegalArgumentException("the " + what + " is missing");
        }
    }
}
