package io.mlmanager.mlrunner.runner;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.Locale;

/** Loading runners by format, checksums, and the JSON description of a loaded model. */
public final class Runners {
    private Runners() {}

    /**
     * Loads a model.
     *
     * @param format {@code mojo} (everything comes from the MOJO) or {@code onnx} (kind, inputs
     *     and classes come from {@code metadataJson}, see {@link OnnxMetadata})
     * @param metadataJson ignored for a MOJO, may be null then
     * @throws IllegalArgumentException for an unknown format or a payload that does not load
     */
    public static Runner load(String format, byte[] payload, String metadataJson) {
        String normalized = format == null ? "" : format.trim().toLowerCase(Locale.ROOT);
        switch (normalized) {
            case "mojo":
                return MojoRunner.load(payload);
            case "onnx":
                return OnnxRunner.load(payload, OnnxMetadata.parse(metadataJson));
            default:
                throw new IllegalArgumentException("unknown model format " + format + " (expected mojo or onnx)");
        }
    }

    /** The lower-case hex SHA-256 of {@code payload}. */
    public static String sha256(byte[] payload) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(payload));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("this JVM has no SHA-256", e);
        }
    }

    /**
     * The JSON description of a runner:
     * {@code {"format", "kind", "inputs": [{"name", "type": "numeric"|"text"}], "classes": [...],
     * "outputs": [{"name", "type": "text"|"float64"|"int64"}]}}.
     */
    public static String describe(Runner runner) {
        JsonObject description = new JsonObject();
        description.addProperty("format", runner.format());
        description.addProperty("kind", runner.kind().label());
        JsonArray inputs = new JsonArray();
        for (InputColumn input : runner.inputs()) {
            JsonObject item = new JsonObject();
            item.addProperty("name", input.name());
            item.addProperty("type", input.typeLabel());
            inputs.add(item);
        }
        description.add("inputs", inputs);
        JsonArray classes = new JsonArray();
        runner.classes().forEach(classes::add);
        description.add("classes", classes);
        JsonArray outputs = new JsonArray();
        for (OutputColumn output : runner.outputs()) {
            JsonObject item = new JsonObject();
            item.addProperty("name", output.name());
            item.addProperty("type", output.type().label());
            outputs.add(item);
        }
        description.add("outputs", outputs);
        return description.toString();
    }
}
