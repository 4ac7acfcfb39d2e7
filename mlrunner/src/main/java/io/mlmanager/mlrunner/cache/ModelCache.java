package io.mlmanager.mlrunner.cache;

import io.mlmanager.mlrunner.runner.Runner;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.function.Supplier;

/**
 * The loaded models, keyed by model id and payload checksum, bounded by least-recent use.
 *
 * <p>One entry per model id: loading a new checksum for an id replaces the old entry. When
 * more than {@code capacity} models are loaded, the least recently used is evicted. Evicted
 * and replaced runners are closed once the batches they are scoring finish; scoring one after
 * that throws {@link ModelClosedException}. Thread-safe.
 */
public final class ModelCache implements AutoCloseable {
    /** The capacity of {@link #ModelCache()}. */
    public static final int DEFAULT_CAPACITY = 16;

    private final int capacity;
    /** In access order: the eldest entry is the least recently used. */
    private final LinkedHashMap<String, Entry> entries = new LinkedHashMap<>(16, 0.75f, true);
    private long loads;
    private long evictions;
    private long replacements;

    private record Entry(String checksum, SharedRunner runner) {}

    /** A cache of {@link #DEFAULT_CAPACITY} models. */
    public ModelCache() {
        this(DEFAULT_CAPACITY);
    }

    /** A cache of at most {@code capacity} models. */
    public ModelCache(int capacity) {
        if (capacity < 1) {
            throw new IllegalArgumentException("the model cache needs room for at least 1 model, not " + capacity);
        }
        this.capacity = capacity;
    }

    /** The runner of this model id and checksum (marking it used), or null if it is not loaded. */
    public synchronized Runner get(String modelId, String checksum) {
        Entry entry = entries.get(modelId);
        return entry != null && entry.checksum.equals(checksum) ? entry.runner : null;
    }

    /** The runner loaded for this model id, whatever its checksum (marking it used), or null. */
    public synchronized Runner get(String modelId) {
        Entry entry = entries.get(modelId);
        return entry == null ? null : entry.runner;
    }

    /** The checksum loaded for this model id, or null; does not count as a use. */
    public synchronized String checksum(String modelId) {
        for (Map.Entry<String, Entry> entry : entries.entrySet()) {
            if (entry.getKey().equals(modelId)) {
                return entry.getValue().checksum;
            }
        }
        return null;
    }

    /**
     * Caches a newly loaded runner, replacing the entry of the same model id and evicting the
     * least recently used entries beyond capacity (closing their runners).
     *
     * @return the cached runner, to score with
     */
    public Runner put(String modelId, String checksum, Runner runner) {
        Objects.requireNonNull(modelId, "model id");
        Objects.requireNonNull(checksum, "checksum");
        SharedRunner shared = new SharedRunner(modelId, Objects.requireNonNull(runner, "runner"));
        List<SharedRunner> closing = new ArrayList<>();
        synchronized (this) {
            Entry old = entries.put(modelId, new Entry(checksum, shared));
            loads++;
            if (old != null) {
                replacements++;
                closing.add(old.runner);
            }
            Iterator<Entry> eldest = entries.values().iterator();
            while (entries.size() > capacity) {
                closing.add(eldest.next().runner);
                eldest.remove();
                evictions++;
            }
        }
        closing.forEach(SharedRunner::close); // outside the lock: waits for batches in flight
        return shared;
    }

    /**
     * The runner of this model id and checksum, loaded with {@code loader} if it is not cached.
     * Two threads missing at once may both load; the later one replaces the earlier.
     */
    public Runner getOrLoad(String modelId, String checksum, Supplier<Runner> loader) {
        Runner cached = get(modelId, checksum);
        return cached != null ? cached : put(modelId, checksum, loader.get());
    }

    /** Drops and closes the entry of this model id; whether there was one. */
    public boolean remove(String modelId) {
        Entry entry;
        synchronized (this) {
            entry = entries.remove(modelId);
        }
        if (entry != null) {
            entry.runner.close();
        }
        return entry != null;
    }

    /** The cached model ids, least recently used first. */
    public synchronized List<String> ids() {
        return List.copyOf(entries.keySet());
    }

    /** The number of cached models. */
    public synchronized int size() {
        return entries.size();
    }

    /** The most models this cache holds. */
    public int capacity() {
        return capacity;
    }

    /** How many runners were put in the cache. */
    public synchronized long loads() {
        return loads;
    }

    /** How many runners were evicted for room. */
    public synchronized long evictions() {
        return evictions;
    }

    /** How many runners were replaced by a new checksum (or a reload) of the same model id. */
    public synchronized long replacements() {
        return replacements;
    }

    /** Drops and closes every entry. */
    @Override
    public void close() {
        List<SharedRunner> closing = new ArrayList<>();
        synchronized (this) {
            entries.values().forEach(entry -> closing.add(entry.runner));
            entries.clear();
        }
        closing.forEach(SharedRunner::close);
    }
}
