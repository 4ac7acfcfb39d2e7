package io.mlmanager.mlrunner.cache;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mlmanager.mlrunner.block.Column;
import io.mlmanager.mlrunner.block.ColumnBlock;
import io.mlmanager.mlrunner.runner.InputColumn;
import io.mlmanager.mlrunner.runner.ModelKind;
import io.mlmanager.mlrunner.runner.OutputColumn;
import io.mlmanager.mlrunner.runner.Runner;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

class ModelCacheTest {

    /** A runner that records whether it was closed, and can hold a batch until released. */
    static final class FakeRunner implements Runner {
        volatile boolean closed;
        final CountDownLatch scoring = new CountDownLatch(1);
        volatile CountDownLatch release;

        @Override
        public ModelKind kind() {
            return ModelKind.REGRESSION;
        }

        @Override
        public List<InputColumn> inputs() {
            return List.of();
        }

        @Override
        public List<String> classes() {
            return List.of();
        }

        @Override
        public List<OutputColumn> outputs() {
            return OutputColumn.of(ModelKind.REGRESSION, List.of(), false);
        }

        @Override
        public String format() {
            return "fake";
        }

        @Override
        public ColumnBlock score(ColumnBlock inputs) {
            if (closed) {
                throw new AssertionError("scored after close");
            }
            scoring.countDown();
            if (release != null) {
                try {
                    release.await(10, TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
            return ColumnBlock.of(new Column.Float64("PREDICTION", new double[inputs.rows()]));
        }

        @Override
        public void close() {
            closed = true;
        }
    }

    @Test
    void evictsTheLeastRecentlyUsed() {
        ModelCache cache = new ModelCache(2);
        FakeRunner a = new FakeRunner();
        FakeRunner b = new FakeRunner();
        FakeRunner c = new FakeRunner();
        cache.put("a", "1", a);
        cache.put("b", "1", b);
        assertNotNull(cache.get("a", "1")); // a is now more recent than b
        cache.put("c", "1", c);
        assertEquals(List.of("a", "c"), cache.ids());
        assertNull(cache.get("b", "1"));
        assertTrue(b.closed);
        assertFalse(a.closed || c.closed);
        assertEquals(2, cache.size());
        assertEquals(3, cache.loads());
        assertEquals(1, cache.evictions());
        cache.put("d", "1", new FakeRunner());
        assertEquals(List.of("c", "d"), cache.ids());
        assertTrue(a.closed);
        assertEquals(2, cache.evictions());
    }

    @Test
    void aNewChecksumReplacesTheOldEntry() {
        ModelCache cache = new ModelCache(4);
        FakeRunner old = new FakeRunner();
        FakeRunner fresh = new FakeRunner();
        cache.put("m", "old", old);
        cache.put("m", "new", fresh);
        assertNull(cache.get("m", "old"));
        assertNotNull(cache.get("m", "new"));
        assertEquals("new", cache.checksum("m"));
        assertTrue(old.closed);
        assertFalse(fresh.closed);
        assertEquals(1, cache.size());
        assertEquals(1, cache.replacements());
        assertEquals(0, cache.evictions());
    }

    @Test
    void getOrLoadLoadsOnce() {
        ModelCache cache = new ModelCache();
        AtomicInteger loads = new AtomicInteger();
        Runner first = cache.getOrLoad("m", "c", () -> {
            loads.incrementAndGet();
            return new FakeRunner();
        });
        Runner second = cache.getOrLoad("m", "c", () -> {
            loads.incrementAndGet();
            return new FakeRunner();
        });
        assertSame(first, second);
        assertEquals(1, loads.get());
        assertEquals(ModelCache.DEFAULT_CAPACITY, cache.capacity());
    }

    @Test
    void anEvictedRunnerIsClosedOnlyAfterItsBatchAndRefusesNewOnes() throws Exception {
        ModelCache cache = new ModelCache(1);
        FakeRunner busy = new FakeRunner();
        busy.release = new CountDownLatch(1);
        Runner shared = cache.put("busy", "1", busy);
        ExecutorService pool = Executors.newFixedThreadPool(2);
        try {
            Future<ColumnBlock> batch = pool.submit(() -> shared.score(new ColumnBlock(3, List.of())));
            assertTrue(busy.scoring.await(10, TimeUnit.SECONDS));
            Future<?> evict = pool.submit(() -> cache.put("other", "1", new FakeRunner()));
            Thread.sleep(50);
            assertFalse(busy.closed, "closed while a batch was being scored");
            busy.release.countDown();
            assertEquals(3, batch.get(10, TimeUnit.SECONDS).rows());
            evict.get(10, TimeUnit.SECONDS);
            assertTrue(busy.closed);
            assertThrows(ModelClosedException.class, () -> shared.score(new ColumnBlock(1, List.of())));
        } finally {
            pool.shutdownNow();
        }
    }

    @Test
    void manyThreadsShareTheCache() throws Exception {
        ModelCache cache = new ModelCache(3);
        ExecutorService pool = Executors.newFixedThreadPool(4);
        try {
            List<Future<?>> work = new java.util.ArrayList<>();
            for (int t = 0; t < 4; t++) {
                int seed = t;
                work.add(pool.submit(() -> {
                    for (int i = 0; i < 500; i++) {
                        String id = "m" + ((i + seed) % 5);
                        Runner runner = cache.getOrLoad(id, "c", FakeRunner::new);
                        try {
                            runner.score(new ColumnBlock(1, List.of()));
                        } catch (ModelClosedException e) {
                            // evicted between get and score: the caller loads again
                        }
                    }
                    return null;
                }));
            }
            for (Future<?> f : work) {
                f.get(30, TimeUnit.SECONDS);
            }
        } finally {
            pool.shutdownNow();
        }
        assertTrue(cache.size() <= 3);
        assertEquals(cache.loads() - cache.size(), cache.evictions() + cache.replacements());
    }

    @Test
    void capacityMustBePositive() {
        assertThrows(IllegalArgumentException.class, () -> new ModelCache(0));
    }

    @Test
    void removeAndCloseCloseRunners() {
        ModelCache cache = new ModelCache();
        FakeRunner a = new FakeRunner();
        FakeRunner b = new FakeRunner();
        cache.put("a", "1", a);
        cache.put("b", "1", b);
        assertTrue(cache.remove("a"));
        assertFalse(cache.remove("a"));
        assertTrue(a.closed);
        cache.close();
        assertTrue(b.closed);
        assertEquals(0, cache.size());
    }
}
