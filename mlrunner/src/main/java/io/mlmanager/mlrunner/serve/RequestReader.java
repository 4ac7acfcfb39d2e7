package io.mlmanager.mlrunner.serve;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.mlmanager.mlrunner.block.Column;
import io.mlmanager.mlrunner.block.ColumnBlock;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * A request body read into the block of model inputs, the way MLflow's scoring server reads it
 * (MLflow 3.17, {@code mlflow/pyfunc/scoring_server}): JSON with exactly one of
 * {@code dataframe_split}, {@code dataframe_records}, {@code instances} or {@code inputs} (and
 * optionally {@code params}, ignored), or CSV with a header row. Columns are matched by name;
 * extra columns are ignored and missing ones refused, as MLflow's schema enforcement does.
 */
final class RequestReader {
    private static final Set<String> FORMATS = Set.of("dataframe_split", "dataframe_records", "instances", "inputs");
    private final List<InputSpec> inputs;
    private final JsonColumns fastJson;

    RequestReader(List<InputSpec> inputs) {
        this.inputs = List.copyOf(inputs);
        this.fastJson = new JsonColumns(inputs);
    }

    /**
     * The model inputs of a request.
     *
     * @param contentType the request's Content-Type header (null: JSON)
     * @throws BadRequest with 415 for another content type or charset, 400 for a body that
     *     does not fit the model
     */
    ColumnBlock read(byte[] body, String contentType) {
        String mime = contentType == null ? "application/json" : contentType;
        String[] parts = mime.split(";");
        mime = parts[0].trim().toLowerCase(Locale.ROOT);
        for (int i = 1; i < parts.length; i++) {
            String[] pair = parts[i].trim().split("=", 2);
            if (!pair[0].trim().equalsIgnoreCase("charset") || pair.length < 2
                    || !pair[1].trim().replace("\"", "").equalsIgnoreCase("utf-8")) {
                throw new BadRequest(415, "The scoring server only supports UTF-8 and the content type"
                        + " parameter charset, got '" + contentType + "'");
            }
        }
        if (body.length == 0) {
            throw new BadRequest("The request body is empty: send the rows to score as JSON or CSV");
        }
        switch (mime) {
            case "application/json":
                ColumnBlock fast = fastJson.read(body);
                return fast != null ? fast : json(utf8(body));
            case "text/csv":
                return csv(utf8(body));
            default:
                throw new BadRequest(415, "This predictor only supports the following content types:"
                        + " [text/csv, application/json]. Got '" + contentType + "'.");
        }
    }

    private static String utf8(byte[] body) {
        try {
            return StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(body)).toString();
        } catch (CharacterCodingException e) {
            throw new BadRequest("Ensure that input is a valid UTF-8 encoded string: " + e.getMessage());
        }
    }

    private ColumnBlock json(String text) {
        JsonElement parsed;
        try {
            parsed = JsonParser.parseString(text);
        } catch (RuntimeException e) {
            throw new BadRequest("Ensure that input is a valid JSON formatted string. Error: "
                    + rootMessage(e));
        }
        if (!parsed.isJsonObject()) {
            throw new BadRequest(requiredFormat() + " Received " + (parsed.isJsonArray() ? "a list." : parsed + "."));
        }
        JsonObject request = parsed.getAsJsonObject();
        List<String> found = new ArrayList<>();
        for (String key : request.keySet()) {
            if (FORMATS.contains(key)) {
                found.add(key);
            }
        }
        if (found.size() != 1) {
            throw new BadRequest(requiredFormat() + " Received dictionary with input fields: " + request.keySet());
        }
        String format = found.get(0);
        JsonElement data = request.get(format);
        switch (format) {
            case "dataframe_split":
                return split(data);
            case "dataframe_records":
                if (!data.isJsonArray()) {
                    throw new BadRequest("Dataframe records format must be a list of records. Got "
                            + (data.isJsonObject() ? "dictionary." : data + "."));
                }
                return records(data.getAsJsonArray());
            default:
                if (data.isJsonObject()) {
                    return columns(data.getAsJsonObject());
                }
                if (data.isJsonArray()) {
                    return records(data.getAsJsonArray());
                }
                throw new BadRequest("'" + format + "' must hold records or a dictionary of columns, not " + data);
        }
    }

    private static String requiredFormat() {
        return "The input must be a JSON dictionary with exactly one of the input fields"
                + " {dataframe_split, dataframe_records, instances, inputs}.";
    }

    /** {@code {"columns": [...], "data": [[...], ...], "index": [...]}}. */
    private ColumnBlock split(JsonElement data) {
        if (!data.isJsonObject()) {
            throw new BadRequest("Dataframe split format must be a dictionary. Got "
                    + (data.isJsonArray() ? "list." : data + "."));
        }
        JsonObject split = data.getAsJsonObject();
        if (!split.has("data") || !Set.of("columns", "data", "index").containsAll(split.keySet())) {
            throw new BadRequest("Dataframe split format must have 'data' field and optionally 'columns'"
                    + " and 'index' fields. Got " + split.keySet() + ".");
        }
        JsonArray rows = array(split.get("data"), "dataframe_split's data");
        List<String> names = new ArrayList<>();
        if (split.has("columns") && !split.get("columns").isJsonNull()) {
            for (JsonElement name : array(split.get("columns"), "dataframe_split's columns")) {
                names.add(name.isJsonPrimitive() ? name.getAsString() : name.toString());
            }
        } else {
            int width = rows.isEmpty() || !rows.get(0).isJsonArray() ? 0 : rows.get(0).getAsJsonArray().size();
            for (int i = 0; i < width; i++) {
                names.add(Integer.toString(i)); // pandas' default column names
            }
        }
        int[] positions = positions(names);
        InputColumns[] columns = builders(rows.size());
        for (int row = 0; row < rows.size(); row++) {
            JsonElement element = rows.get(row);
            if (!element.isJsonArray() || element.getAsJsonArray().size() != names.size()) {
                throw new BadRequest("Provided dataframe_split field is not a valid dataframe representation"
                        + " in 'split' format: row " + row + " holds " + element + " for the "
                        + names.size() + " columns " + names);
            }
            JsonArray values = element.getAsJsonArray();
            for (int i = 0; i < columns.length; i++) {
                columns[i].json(row, values.get(positions[i]));
            }
        }
        return block(rows.size(), columns);
    }

    /** A list of {@code {column: value}} records; a column absent from a record is a missing value. */
    private ColumnBlock records(JsonArray records) {
        Set<String> seen = new java.util.HashSet<>();
        for (int row = 0; row < records.size(); row++) {
            JsonElement record = records.get(row);
            if (!record.isJsonObject()) {
                // MLflow makes a frame of positional columns 0, 1...: the named inputs are missing.
                throw missing(inputNames(), List.of());
            }
            seen.addAll(record.getAsJsonObject().keySet());
        }
        checkPresent(seen);
        InputColumns[] columns = builders(records.size());
        for (int row = 0; row < records.size(); row++) {
            JsonObject record = records.get(row).getAsJsonObject();
            for (int i = 0; i < columns.length; i++) {
                columns[i].json(row, record.get(inputs.get(i).name()));
            }
        }
        return block(records.size(), columns);
    }

    /** {@code {column: [values...]}}; a single value is a column of one row. */
    private ColumnBlock columns(JsonObject columnsByName) {
        checkPresent(columnsByName.keySet());
        int rows = -1;
        for (InputSpec input : inputs) {
            JsonElement values = columnsByName.get(input.name());
            int size = values.isJsonArray() ? values.getAsJsonArray().size() : 1;
            if (rows >= 0 && size != rows) {
                throw new BadRequest("The length of values for each input/column name are not the same: "
                        + "column '" + input.name() + "' holds " + size + " values, the first " + rows);
            }
            rows = size;
        }
        InputColumns[] columns = builders(rows);
        for (int i = 0; i < columns.length; i++) {
            JsonElement values = columnsByName.get(inputs.get(i).name());
            if (values.isJsonArray()) {
                JsonArray array = values.getAsJsonArray();
                for (int row = 0; row < rows; row++) {
                    columns[i].json(row, array.get(row));
                }
            } else {
                columns[i].json(0, values);
            }
        }
        return block(rows, columns);
    }

    private ColumnBlock csv(String text) {
        List<List<String>> records = Csv.parse(text);
        if (records.isEmpty()) {
            throw new BadRequest("Failed to parse input as a Pandas DataFrame: no columns to parse from the CSV");
        }
        List<String> header = records.get(0);
        int[] positions = positions(header);
        int rows = records.size() - 1;
        InputColumns[] columns = builders(rows);
        for (int row = 0; row < rows; row++) {
            List<String> record = records.get(row + 1);
            if (record.size() > header.size()) {
                throw new BadRequest("Failed to parse input as a Pandas DataFrame: CSV line " + (row + 2)
                        + " has " + record.size() + " fields, the header " + header.size());
            }
            for (int i = 0; i < columns.length; i++) {
                columns[i].text(row, positions[i] < record.size() ? record.get(positions[i]) : null);
            }
        }
        return block(rows, columns);
    }

    /** For each model input, its position among {@code names}; refuses missing inputs. */
    private int[] positions(List<String> names) {
        Map<String, Integer> index = new HashMap<>();
        for (int i = names.size() - 1; i >= 0; i--) {
            index.put(names.get(i), i);
        }
        checkPresent(index.keySet());
        int[] positions = new int[inputs.size()];
        for (int i = 0; i < positions.length; i++) {
            positions[i] = index.get(inputs.get(i).name());
        }
        return positions;
    }

    private void checkPresent(Set<String> names) {
        List<String> missing = new ArrayList<>();
        for (InputSpec input : inputs) {
            if (!names.contains(input.name())) {
                missing.add(input.name());
            }
        }
        if (!missing.isEmpty()) {
            List<String> extra = new ArrayList<>(names);
            extra.removeAll(inputNames());
            throw missing(missing, extra);
        }
    }

    private static BadRequest missing(List<String> missing, List<String> extra) {
        return new BadRequest("Model is missing inputs " + quoted(missing) + "."
                + (extra.isEmpty() ? "" : " Note that there were extra inputs: " + quoted(extra) + "."));
    }

    private List<String> inputNames() {
        List<String> names = new ArrayList<>();
        inputs.forEach(i -> names.add(i.name()));
        return names;
    }

    private static String quoted(List<String> names) {
        List<String> quoted = new ArrayList<>();
        names.forEach(n -> quoted.add("'" + n + "'"));
        return quoted.toString();
    }

    private InputColumns[] builders(int rows) {
        InputColumns[] columns = new InputColumns[inputs.size()];
        for (int i = 0; i < columns.length; i++) {
            columns[i] = new InputColumns(inputs.get(i), rows);
        }
        return columns;
    }

    private static ColumnBlock block(int rows, InputColumns[] columns) {
        List<Column> built = new ArrayList<>(columns.length);
        for (InputColumns column : columns) {
            built.add(column.build());
        }
        return new ColumnBlock(rows, built);
    }

    private static JsonArray array(JsonElement element, String what) {
        if (element == null || !element.isJsonArray()) {
            throw new BadRequest(what + " must be a list, not " + element);
        }
        return element.getAsJsonArray();
    }

    private static String rootMessage(Throwable e) {
        Throwable root = e;
        while (root.getCause() != null) {
            root = root.getCause();
        }
        return root.getMessage();
    }
}
