package io.mlmanager.mlrunner.serve;

import com.google.gson.JsonElement;
import com.google.gson.JsonPrimitive;
import io.mlmanager.mlrunner.block.Column;
import io.mlmanager.mlrunner.runner.NumberText;
import java.util.Locale;

/**
 * One model input's values, filled cell by cell from a request and checked against the input's
 * signature type; a bad cell is a {@link BadRequest} naming the column and the row.
 */
final class InputColumns {
    private final InputSpec spec;
    private final double[] numbers;
    private final String[] texts;

    InputColumns(InputSpec spec, int rows) {
        this.spec = spec;
        boolean text = spec.type() == InputSpec.Type.TEXT;
        this.numbers = text ? null : new double[rows];
        this.texts = text ? new String[rows] : null;
    }

    /** Sets a row from a JSON value (null or absent: a missing value). */
    void json(int row, JsonElement cell) {
        if (cell == null || cell.isJsonNull()) {
            missing(row);
            return;
        }
        if (!cell.isJsonPrimitive()) {
            throw bad(row, "holds " + (cell.isJsonArray() ? "a list" : "an object"));
        }
        JsonPrimitive value = cell.getAsJsonPrimitive();
        switch (spec.type()) {
            case TEXT:
                // MLflow casts a number sent for a string column to its text (7 is "7").
                texts[row] = value.isBoolean() ? (value.getAsBoolean() ? "True" : "False") : value.getAsString();
                return;
            case BOOLEAN:
                if (!value.isBoolean()) {
                    throw bad(row, "holds " + value + ", not true or false");
                }
                numbers[row] = value.getAsBoolean() ? 1 : 0;
                return;
            default:
                if (!value.isNumber()) {
                    throw bad(row, "holds " + value + ", not " + spec.type().label());
                }
                number(row, value.getAsDouble(), value.getAsString());
        }
    }

    /** Sets a row from a CSV field (empty: a missing value, as pandas reads it). */
    void text(int row, String cell) {
        if (cell == null || cell.isEmpty()) {
            missing(row);
            return;
        }
        switch (spec.type()) {
            case TEXT:
                texts[row] = cell;
                return;
            case BOOLEAN:
                switch (cell.trim().toLowerCase(Locale.ROOT)) {
                    case "true":
                        numbers[row] = 1;
                        return;
                    case "false":
                        numbers[row] = 0;
                        return;
                    default:
                        throw bad(row, "holds '" + cell + "', not True or False");
                }
            default:
                double parsed;
                try {
                    parsed = NumberText.parse(cell);
                } catch (NumberFormatException e) {
                    throw bad(row, "holds '" + cell + "', not " + spec.type().label());
                }
                number(row, parsed, cell);
        }
    }

    private void number(int row, double value, String shown) {
        if (spec.type() == InputSpec.Type.INTEGER && (value != Math.rint(value) || Double.isInfinite(value))) {
            throw bad(row, "holds " + shown + ", not an integer");
        }
        numbers[row] = value;
    }

    private void missing(int row) {
        switch (spec.type()) {
            case DOUBLE:
                numbers[row] = Double.NaN;
                return;
            case TEXT:
                texts[row] = null;
                return;
            default:
                throw bad(row, "is null, and the model's signature requires " + spec.type().label());
        }
    }

    Column build() {
        return numbers != null ? new Column.Float64(spec.name(), numbers) : new Column.Text(spec.name(), texts);
    }

    private BadRequest bad(int row, String problem) {
        return new BadRequest("Incompatible input for column '" + spec.name() + "' at row " + row + ": it "
                + problem + " (the model expects " + spec.type().label() + ")");
    }
}
