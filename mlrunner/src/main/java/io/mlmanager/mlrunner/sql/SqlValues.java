package io.mlmanager.mlrunner.sql;

import io.mlmanager.mlrunner.block.Column;
import io.mlmanager.mlrunner.block.ColumnBlock;
import io.mlmanager.mlrunner.runner.InputColumn;
import io.mlmanager.mlrunner.runner.NumberText;
import io.mlmanager.mlrunner.runner.OutputColumn;
import java.util.ArrayList;
import java.util.List;

/** SQL values in and out of one-row blocks. */
final class SqlValues {
    private SqlValues() {}

    /**
     * A one-row block of a model's inputs: integers as int64, other numbers as float64, text
     * parsed as a number for a numeric input, booleans as 1/0 (numeric) or True/False (text),
     * everything else as text; SQL NULL is missing (NaN for a numeric input, null for a text one).
     */
    static ColumnBlock row(List<InputColumn> inputs, Object[] values) {
        List<Column> columns = new ArrayList<>(inputs.size());
        for (int i = 0; i < inputs.size(); i++) {
            columns.add(cell(inputs.get(i), values[i]));
        }
        return new ColumnBlock(1, columns);
    }

    private static Column cell(InputColumn input, Object value) {
        String name = input.name();
        if (value == null) {
            return input.numeric()
                    ? new Column.Float64(name, new double[] {Double.NaN})
                    : new Column.Text(name, new String[] {null});
        }
        if (value instanceof Long || value instanceof Integer || value instanceof Short || value instanceof Byte) {
            return new Column.Int64(name, new long[] {((Number) value).longValue()});
        }
        if (value instanceof Number number) {
            return new Column.Float64(name, new double[] {number.doubleValue()});
        }
        if (value instanceof String text && input.numeric()) {
            try {
                return new Column.Float64(name, new double[] {NumberText.parse(text)});
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("input " + name + " is numeric, and '" + text + "' is not a number", e);
            }
        }
        if (value instanceof Boolean flag) {
            return input.numeric()
                    ? new Column.Float64(name, new double[] {flag ? 1 : 0})
                    : new Column.Text(name, new String[] {flag ? "True" : "False"});
        }
        return new Column.Text(name, new String[] {value.toString()});
    }

    /** The prediction of a one-row output block as a SQL value: text, double or long (NULL when missing). */
    static Object prediction(ColumnBlock outputs) {
        return value(outputs.column(OutputColumn.PREDICTION));
    }

    /** The value of a one-row block's column as a SQL value (NaN as NULL). */
    static Object value(Column column) {
        if (column instanceof Column.Text text) {
            return text.values()[0];
        }
        if (column instanceof Column.Int64 integers) {
            return integers.values()[0];
        }
        double v = ((Column.Float64) column).values()[0];
        return Double.isNaN(v) ? null : v;
    }
}
