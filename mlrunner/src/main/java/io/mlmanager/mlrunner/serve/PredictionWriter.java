package io.mlmanager.mlrunner.serve;

import com.google.gson.JsonPrimitive;
import io.mlmanager.mlrunner.block.Column;
import io.mlmanager.mlrunner.block.ColumnBlock;
import io.mlmanager.mlrunner.runner.LabelType;
import io.mlmanager.mlrunner.runner.Runner;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * A runner's output block written as MLflow's scoring server answers for the same model:
 * {@code {"predictions": [...]}} holding what the model's pyfunc {@code predict} returns.
 *
 * <ul>
 *   <li>ONNX (scikit-learn, XGBoost, LightGBM): one value per row, the label of a classifier
 *       (a JSON number, boolean or string as the model's classes are), the value of a
 *       regressor, the cluster index of a clustering model;
 *   <li>MOJO (MLflow's h2o flavor answers H2O's prediction frame): one record per row, {@code
 *       predict} then a classifier's probabilities named by class ({@code p0} for a class
 *       {@code 0}, as H2O names them).
 * </ul>
 * Numbers are written as Java's shortest repr; NaN as {@code NaN}, as Python's json writes it.
 */
final class PredictionWriter {
    private final boolean records;
    private final LabelType labelType;
    private final List<String> recordNames;

    PredictionWriter(Runner runner) {
        this.records = runner.format().equals("mojo");
        this.labelType = runner.labelType();
        List<String> names = new ArrayList<>();
        names.add("predict");
        for (String label : runner.classes()) {
            names.add(!label.isEmpty() && Character.isDigit(label.charAt(0)) ? "p" + label : label);
        }
        this.recordNames = List.copyOf(names);
    }

    byte[] write(ColumnBlock outputs) {
        StringBuilder json = new StringBuilder(32 + outputs.rows() * 24);
        json.append("{\"predictions\": [");
        List<Column> columns = outputs.columns();
        for (int row = 0; row < outputs.rows(); row++) {
            if (row > 0) {
                json.append(", ");
            }
            if (records) {
                json.append('{');
                for (int c = 0; c < columns.size(); c++) {
                    if (c > 0) {
                        json.append(", ");
                    }
                    json.append(quoted(recordNames.get(Math.min(c, recordNames.size() - 1)))).append(": ");
                    value(json, columns.get(c), row, LabelType.TEXT);
                }
                json.append('}');
            } else {
                value(json, columns.get(0), row, labelType);
            }
        }
        json.append("]}");
        return json.toString().getBytes(StandardCharsets.UTF_8);
    }

    private static void value(StringBuilder json, Column column, int row, LabelType labels) {
        if (column instanceof Column.Float64 numbers) {
            number(json, numbers.values()[row]);
        } else if (column instanceof Column.Int64 integers) {
            json.append(integers.values()[row]);
        } else {
            label(json, ((Column.Text) column).values()[row], labels);
        }
    }

    private static void label(StringBuilder json, String label, LabelType type) {
        if (label == null) {
            json.append("null");
            return;
        }
        switch (type) {
            case INTEGER:
                json.append(label);
                return;
            case BOOLEAN:
                json.append(Boolean.toString(label.equalsIgnoreCase("true") || label.equals("1")));
                return;
            case FLOAT:
                number(json, Double.parseDouble(label.replace("nan", "NaN").replace("inf", "Infinity")));
                return;
            default:
                json.append(quoted(label));
        }
    }

    private static void number(StringBuilder json, double value) {
        if (Double.isNaN(value)) {
            json.append("NaN");
        } else if (Double.isInfinite(value)) {
            json.append(value > 0 ? "Infinity" : "-Infinity");
        } else if (value == Math.rint(value) && Math.abs(value) < 1e16) {
            json.append((long) value).append(".0");
        } else {
            json.append(value);
        }
    }

    private static String quoted(String text) {
        return new JsonPrimitive(text).toString();
    }
}
