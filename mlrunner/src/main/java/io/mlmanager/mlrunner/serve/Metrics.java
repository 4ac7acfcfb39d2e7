package io.mlmanager.mlrunner.serve;

import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.LongAdder;

/**
 * The serving process's Prometheus metrics (text format 0.0.4): requests by route and status,
 * the scoring latency histogram, rows scored, and the model served. Counters are lock-free
 * ({@link LongAdder}) so that recording costs request threads nothing measurable.
 */
final class Metrics {
    /** Upper bounds of the latency buckets, in seconds. */
    private static final double[] BUCKETS = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
    private final Map<String, LongAdder> requests = new ConcurrentHashMap<>();
    private final LongAdder[] buckets = new LongAdder[BUCKETS.length + 1];
    private final LongAdder latencyNanos = new LongAdder();
    private final LongAdder invocations = new LongAdder();
    private final LongAdder rows = new LongAdder();
    private volatile Map<String, String> model = Map.of();

    Metrics() {
        for (int i = 0; i < buckets.length; i++) {
            buckets[i] = new LongAdder();
        }
    }

    /** Sets the labels of the served model (id, sha256, format, kind), once it is loaded. */
    void model(Map<String, String> labels) {
        this.model = new TreeMap<>(labels);
    }

    /** Counts one answered request. */
    void request(String route, int status) {
        requests.computeIfAbsent(route + "\u0000" + status, k -> new LongAdder()).increment();
    }

    /** Records one POST /invocations: its duration and the rows it scored. */
    void invocation(long nanos, int scoredRows) {
        double seconds = nanos / 1e9;
        int bucket = 0;
        while (bucket < BUCKETS.length && seconds > BUCKETS[bucket]) {
            bucket++;
        }
        buckets[bucket].increment();
        latencyNanos.add(nanos);
        invocations.increment();
        rows.add(scoredRows);
    }

    /** The metrics in Prometheus' text format. */
    String render(boolean ready) {
        StringBuilder text = new StringBuilder(2048);
        text.append("# HELP mlrunner_requests_total HTTP requests answered, by route and status.\n")
                .append("# TYPE mlrunner_requests_total counter\n");
        new TreeMap<>(requests).forEach((key, count) -> {
            String[] parts = key.split("\u0000");
            text.append("mlrunner_requests_total{route=\"").append(parts[0]).append("\",status=\"")
                    .append(parts[1]).append("\"} ").append(count.sum()).append('\n');
        });
        text.append("# HELP mlrunner_request_duration_seconds Time to answer POST /invocations.\n")
                .append("# TYPE mlrunner_request_duration_seconds histogram\n");
        long cumulative = 0;
        for (int i = 0; i < buckets.length; i++) {
            cumulative += buckets[i].sum();
            String bound = i < BUCKETS.length ? Double.toString(BUCKETS[i]) : "+Inf";
            text.append("mlrunner_request_duration_seconds_bucket{le=\"").append(bound).append("\"} ")
                    .append(cumulative).append('\n');
        }
        text.append("mlrunner_request_duration_seconds_sum ").append(latencyNanos.sum() / 1e9).append('\n')
                .append("mlrunner_request_duration_seconds_count ").append(invocations.sum()).append('\n');
        text.append("# HELP mlrunner_rows_scored_total Rows scored by POST /invocations.\n")
                .append("# TYPE mlrunner_rows_scored_total counter\n")
                .append("mlrunner_rows_scored_total ").append(rows.sum()).append('\n');
        text.append("# HELP mlrunner_model_info The model served (always 1).\n")
                .append("# TYPE mlrunner_model_info gauge\n")
                .append("mlrunner_model_info{");
        int i = 0;
        for (Map.Entry<String, String> label : model.entrySet()) {
            text.append(i++ > 0 ? "," : "").append(label.getKey()).append("=\"")
                    .append(label.getValue().replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n"))
                    .append('"');
        }
        text.append("} 1\n");
        text.append("# HELP mlrunner_ready Whether the model is loaded and answers (1) or not (0).\n")
                .append("# TYPE mlrunner_ready gauge\n")
                .append("mlrunner_ready ").append(ready ? 1 : 0).append('\n');
        return text.toString();
    }
}
