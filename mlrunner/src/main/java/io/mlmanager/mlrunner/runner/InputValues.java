package io.mlmanager.mlrunner.runner;

import io.mlmanager.mlrunner.block.Column;
import io.mlmanager.mlrunner.block.ColumnBlock;
import java.util.List;

/** Block columns read as model inputs: found by name, converted to numbers or text. */
final class InputValues {
    private InputValues() {}

    /** The block's column for a model input, or an error naming the input and the block's columns. */
    static Column find(ColumnBlock block, String input) {
        return block.find(input).orElseThrow(() -> new IllegalArgumentException(
                "the batch lacks model input " + input + " (it has: " + block.names() + ")"));
    }

    /** The block's column for each model input, in the inputs' order. */
    static Column[] columns(ColumnBlock block, List<InputColumn> inputs) {
        Column[] columns = new Column[inputs.size()];
        for (int i = 0; i < columns.length; i++) {
            columns[i] = find(block, inputs.get(i).name());
        }
        return columns;
    }

    /** The column as doubles: float64 as it is, int64 widened, text parsed (null is NaN). */
    static double[] numbers(Column column, String input) {
        if (column instanceof Column.Float64 numbers) {
            return numbers.values();
        }
        if (column instanceof Column.Int64 integers) {
            long[] values = integers.values();
            double[] out = new double[values.length];
            for (int i = 0; i < values.length; i++) {
                out[i] = values[i];
            }
            return out;
        }
        String[] texts = ((Column.Text) column).values();
        double[] out = new double[texts.length];
        for (int i = 0; i < texts.length; i++) {
            try {
                out[i] = NumberText.parse(texts[i]);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("input " + input + " is not numeric: row " + i
                        + " holds '" + texts[i] + "'", e);
            }
        }
        return out;
    }

    /**
     * The column as text for an ONNX string input, as the Python scorer makes it: a missing
     * value (null, NaN) is the empty string, a number is Python's {@code str} of it.
     */
    static String[] pythonTexts(Column column) {
        String[] out = new String[column.size()];
        if (column instanceof Column.Text text) {
            String[] values = text.values();
            for (int i = 0; i < out.length; i++) {
                out[i] = values[i] == null ? "" : values[i];
            }
        } else if (column instanceof Column.Int64 integers) {
            long[] values = integers.values();
            for (int i = 0; i < out.length; i++) {
                out[i] = Long.toString(values[i]);
            }
        } else {
            double[] values = ((Column.Float64) column).values();
            for (int i = 0; i < out.length; i++) {
                out[i] = Double.isNaN(values[i]) ? "" : NumberText.python(values[i]);
            }
        }
        return out;
    }
}
