package io.mlmanager.mlrunner.runner;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.util.ArrayList;
import java.util.List;

/**
 * What an ONNX file does not say, supplied by the caller as JSON:
 * {@code {"kind": "classification", "inputs": ["a", "b"], "classes": ["x", "y"]}}.
 *
 * <p>{@code inputs} are the model's feature names in order (strings, or objects with a
 * {@code name}); {@code classes} the class labels in the order of the probability columns
 * (required for a classifier that outputs probabilities).
 */
public record OnnxMetadata(ModelKind kind, List<String> inputs, List<String> classes) {
    public OnnxMetadata {
        inputs = List.copyOf(inputs);
        classes = List.copyOf(classes);
    }

    /**
     * Parses the metadata JSON.
     *
     * @throws IllegalArgumentException if it is missing, not JSON or lacks kind or inputs
     */
    public static OnnxMetadata parse(String json) {
        if (json == null || json.isBlank()) {
            throw new IllegalArgumentException(
                    "an ONNX model needs metadata JSON with its kind, inputs and classes");
        }
        JsonObject object;
        try {
            object = JsonParser.parseString(json).getAsJsonObject();
        } catch (RuntimeException e) {
            throw new IllegalArgumentException("the ONNX metadata is not a JSON object: " + e.getMessage(), e);
        }
        if (!object.has("kind") || object.get("kind").isJsonNull()) {
            throw new IllegalArgumentException("the ONNX metadata lacks \"kind\"");
        }
        ModelKind kind = ModelKind.parse(object.get("kind").getAsString());
        List<String> inputs = names(object, "inputs");
        if (inputs.isEmpty()) {
            throw new IllegalArgumentException("the ONNX metadata lists no \"inputs\"");
        }
        return new OnnxMetadata(kind, inputs, names(object, "classes"));
    }

    private static List<String> names(JsonObject object, String key) {
        List<String> names = new ArrayList<>();
        JsonElement element = object.get(key);
        if (element == null || element.isJsonNull()) {
            return names;
        }
        if (!element.isJsonArray()) {
            throw new IllegalArgumentException("the ONNX metadata's \"" + key + "\" is not a list");
        }
        JsonArray array = element.getAsJsonArray();
        for (JsonElement item : array) {
            if (item.isJsonObject() && item.getAsJsonObject().has("name")) {
                names.add(item.getAsJsonObject().get("name").getAsString());
            } else if (item.isJsonPrimitive()) {
                names.add(item.getAsString());
            } else {
                throw new IllegalArgumentException(
                        "the ONNX metadata's \"" + key + "\" holds " + item + ", not a name");
            }
        }
        return names;
    }
}
