package io.mlmanager.mlrunner.serve;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.mlmanager.mlrunner.runner.Runners;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.zip.ZipEntry;
import java.util.zip.ZipInputStream;

/**
 * A model as {@code serve} receives it: a zip of {@code representation.json} (what ML Manager
 * stores beside the model in {@code model_representations}) and {@code payload} (the ONNX model
 * or the H2O MOJO), written by {@code shared/serving.py}.
 *
 * @param format {@code onnx} or {@code mojo}
 * @param kind classification, regression or clustering
 * @param inputs the model's inputs with their signature types, in the model's order
 * @param classes a classifier's labels (ONNX), else empty
 * @param modelUri the MLflow model URI the bundle was built from (the model's id)
 * @param payload the model bytes
 * @param payloadSha256 the payload's own checksum (the representation's checksum)
 */
public record ModelBundle(String format, String kind, List<InputSpec> inputs, List<String> classes,
        String modelUri, byte[] payload, String payloadSha256) {

    /** The entry holding the representation's metadata. */
    public static final String METADATA_ENTRY = "representation.json";
    /** The entry holding the model bytes. */
    public static final String PAYLOAD_ENTRY = "payload";

    /** Raised when the bundle's bytes do not have the expected checksum. */
    public static final class ChecksumMismatch extends Exception {
        private static final long serialVersionUID = 1L;

        ChecksumMismatch(String message) {
            super(message);
        }
    }

    /**
     * Reads a bundle after checking that its bytes have the SHA-256 {@code expectedSha256}.
     *
     * @throws ChecksumMismatch if they do not (nothing of the bundle is read then)
     * @throws IllegalArgumentException if it is not a bundle, or one this serving process cannot score
     */
    public static ModelBundle read(byte[] bundle, String expectedSha256) throws ChecksumMismatch {
        String actual = Runners.sha256(bundle);
        if (!actual.equals(expectedSha256)) {
            throw new ChecksumMismatch("the model bundle's SHA-256 is " + actual + ", not the expected "
                    + expectedSha256 + ": refusing to serve it (a truncated download, or another model)");
        }
        String metadata = null;
        byte[] payload = null;
        try (ZipInputStream zip = new ZipInputStream(new ByteArrayInputStream(bundle))) {
            for (ZipEntry entry = zip.getNextEntry(); entry != null; entry = zip.getNextEntry()) {
                if (entry.getName().equals(METADATA_ENTRY)) {
                    metadata = new String(zip.readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
                } else if (entry.getName().equals(PAYLOAD_ENTRY)) {
                    payload = zip.readAllBytes();
                }
            }
        } catch (IOException e) {
            throw new IllegalArgumentException("the model bundle is not a zip archive: " + e.getMessage(), e);
        }
        if (metadata == null || payload == null) {
            throw new IllegalArgumentException("the model bundle lacks " + (metadata == null ? METADATA_ENTRY
                    : PAYLOAD_ENTRY) + " (write bundles with `mlmanager serve` or the model route)");
        }
        return parse(metadata, payload);
    }

    private static ModelBundle parse(String json, byte[] payload) {
        JsonObject object;
        try {
            object = JsonParser.parseString(json).getAsJsonObject();
        } catch (RuntimeException e) {
            throw new IllegalArgumentException(METADATA_ENTRY + " is not a JSON object: " + e.getMessage(), e);
        }
        String format = text(object, "format").toLowerCase(Locale.ROOT);
        if (!format.equals("onnx") && !format.equals("mojo")) {
            throw new IllegalArgumentException("mlrunner serves ONNX and MOJO models, not the " + format
                    + " format: serve it with `mlflow models serve` (mlmanager serve does so by itself)");
        }
        String kind = text(object, "kind").toLowerCase(Locale.ROOT);
        if (!List.of("classification", "regression", "clustering").contains(kind)) {
            throw new IllegalArgumentException("mlrunner serves classification, regression and clustering"
                    + " models, not " + kind + ": serve it with `mlflow models serve`");
        }
        List<InputSpec> inputs = new ArrayList<>();
        for (JsonElement item : array(object, "inputs")) {
            JsonObject input = item.getAsJsonObject();
            inputs.add(new InputSpec(text(input, "name"), InputSpec.Type.ofSql(text(input, "sql_type"))));
        }
        if (inputs.isEmpty()) {
            throw new IllegalArgumentException(METADATA_ENTRY + " lists no inputs");
        }
        List<String> classes = new ArrayList<>();
        array(object, "classes").forEach(c -> classes.add(c.getAsString()));
        String modelUri = object.has("model_uri") ? object.get("model_uri").getAsString() : "model";
        String payloadSha256 = Runners.sha256(payload);
        return new ModelBundle(format, kind, List.copyOf(inputs), List.copyOf(classes), modelUri, payload,
                payloadSha256);
    }

    /** The metadata JSON {@link io.mlmanager.mlrunner.runner.OnnxMetadata} reads (null for a MOJO). */
    public String onnxMetadata() {
        if (!format.equals("onnx")) {
            return null;
        }
        JsonObject metadata = new JsonObject();
        metadata.addProperty("kind", kind);
        JsonArray names = new JsonArray();
        inputs.forEach(i -> names.add(i.name()));
        metadata.add("inputs", names);
        JsonArray labels = new JsonArray();
        classes.forEach(labels::add);
        metadata.add("classes", labels);
        return metadata.toString();
    }

    private static String text(JsonObject object, String key) {
        JsonElement value = object.get(key);
        if (value == null || value.isJsonNull()) {
            throw new IllegalArgumentException(METADATA_ENTRY + " lacks \"" + key + "\"");
        }
        return value.getAsString();
    }

    private static JsonArray array(JsonObject object, String key) {
        JsonElement value = object.get(key);
        return value != null && value.isJsonArray() ? value.getAsJsonArray() : new JsonArray();
    }
}
