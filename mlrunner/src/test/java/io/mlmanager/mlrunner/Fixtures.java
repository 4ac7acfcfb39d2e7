package io.mlmanager.mlrunner;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.mlmanager.mlrunner.block.Column;
import io.mlmanager.mlrunner.block.ColumnBlock;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * The models and expected outputs under {@code src/test/resources/fixtures}, written by
 * {@code make_fixtures.py} from H2O's and scikit-learn's own predictions.
 */
public final class Fixtures {
    private static final JsonObject MANIFEST = JsonParser.parseString(text("fixtures.json"))
            .getAsJsonObject().getAsJsonObject("models");

    private Fixtures() {}

    /** One fixture model. */
    public record Model(String name, String format, String kind, List<String> classes, String metadataJson,
            byte[] payload, ColumnBlock inputs, List<String[]> expected) {

        /** Rows of the input block. */
        public int rows() {
            return inputs.rows();
        }

        /** The input values of one row, in column order, as SQL would pass them (null when missing). */
        public Object[] sqlRow(int row) {
            Object[] values = new Object[inputs.columns().size()];
            for (int c = 0; c < values.length; c++) {
                Column column = inputs.column(c);
                if (column instanceof Column.Float64 numbers) {
                    double v = numbers.values()[row];
                    values[c] = Double.isNaN(v) ? null : v;
                } else {
                    values[c] = ((Column.Text) column).values()[row];
                }
            }
            return values;
        }
    }

    /** The fixture {@code name}: gbm_binomial, gbm_multinomial, gbm_regression, kmeans, logreg, ridge. */
    public static Model model(String name) {
        JsonObject entry = MANIFEST.getAsJsonObject(name);
        assertNotNull(entry, "no fixture " + name);
        List<String> classes = new ArrayList<>();
        entry.getAsJsonArray("classes").forEach(c -> classes.add(c.getAsString()));
        JsonElement metadata = entry.get("metadata");
        return new Model(name, entry.get("format").getAsString(), entry.get("kind").getAsString(), classes,
                metadata == null ? null : metadata.toString(), bytes(entry.get("file").getAsString()),
                inputs(name, entry.getAsJsonArray("inputs")), csv(name + "_expected.csv"));
    }

    private static ColumnBlock inputs(String name, JsonArray columns) {
        List<String[]> rows = csv(name + "_input.csv");
        List<Column> block = new ArrayList<>();
        for (int c = 0; c < columns.size(); c++) {
            JsonObject column = columns.get(c).getAsJsonObject();
            String columnName = column.get("name").getAsString();
            if ("text".equals(column.get("type").getAsString())) {
                String[] values = new String[rows.size()];
                for (int r = 0; r < values.length; r++) {
                    String cell = rows.get(r)[c];
                    values[r] = cell.isEmpty() ? null : cell;
                }
                block.add(new Column.Text(columnName, values));
            } else {
                double[] values = new double[rows.size()];
                for (int r = 0; r < values.length; r++) {
                    String cell = rows.get(r)[c];
                    values[r] = cell.isEmpty() ? Double.NaN : Double.parseDouble(cell);
                }
                block.add(new Column.Float64(columnName, values));
            }
        }
        return new ColumnBlock(rows.size(), block);
    }

    /** The data rows of a fixture CSV (header dropped; no quoting in these files). */
    static List<String[]> csv(String file) {
        List<String> lines = new ArrayList<>(Arrays.asList(text(file).split("\n")));
        lines.remove(0);
        List<String[]> rows = new ArrayList<>();
        for (String line : lines) {
            if (!line.isEmpty()) {
                rows.add(line.split(",", -1));
            }
        }
        return rows;
    }

    /** A fixture file's bytes. */
    public static byte[] bytes(String file) {
        try (InputStream in = Fixtures.class.getResourceAsStream("/fixtures/" + file)) {
            assertNotNull(in, "missing fixture file " + file);
            return in.readAllBytes();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static String text(String file) {
        return new String(bytes(file), StandardCharsets.UTF_8);
    }

    /**
     * Asserts that a runner's output block equals the expected CSV rows: labels and cluster
     * indexes exactly, numbers within {@code relative} (relative to max(1, |expected|)).
     */
    public static void assertOutputs(Model model, ColumnBlock outputs, double relative) {
        assertEquals(model.rows(), outputs.rows(), model.name() + ": rows");
        for (int r = 0; r < model.rows(); r++) {
            String[] expected = model.expected().get(r);
            assertEquals(expected.length, outputs.columns().size(), model.name() + ": output columns");
            for (int c = 0; c < expected.length; c++) {
                String where = model.name() + " row " + r + " column " + outputs.column(c).name();
                Column column = outputs.column(c);
                if (column instanceof Column.Text text) {
                    assertEquals(expected[c].isEmpty() ? null : expected[c], text.values()[r], where);
                } else if (column instanceof Column.Int64 integers) {
                    assertEquals(Long.parseLong(expected[c]), integers.values()[r], where);
                } else {
                    double actual = ((Column.Float64) column).values()[r];
                    if (expected[c].isEmpty()) {
                        assertTrue(Double.isNaN(actual), where + ": expected missing, got " + actual);
                        continue;
                    }
                    double want = Double.parseDouble(expected[c]);
                    assertEquals(want, actual, relative * Math.max(1.0, Math.abs(want)), where);
                }
            }
        }
    }
}
