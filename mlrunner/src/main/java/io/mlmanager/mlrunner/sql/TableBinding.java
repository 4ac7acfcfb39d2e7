package io.mlmanager.mlrunner.sql;

import io.mlmanager.mlrunner.block.ColumnBlock;
import io.mlmanager.mlrunner.runner.InputColumn;
import io.mlmanager.mlrunner.runner.OutputColumn;
import io.mlmanager.mlrunner.runner.Runner;
import java.sql.SQLException;
import java.util.List;

/**
 * Where a model's inputs and outputs are in a table's rows: input columns by name (any case),
 * {@code PREDICTION}, and the probability columns named like the classes that the table has
 * (-1 where it has none).
 */
record TableBinding(String table, int[] inputIndexes, int[] outputIndexes) {

    static TableBinding of(Runner runner, List<String> columns, String table, String modelId) throws SQLException {
        List<InputColumn> inputs = runner.inputs();
        int[] inputIndexes = new int[inputs.size()];
        for (int i = 0; i < inputs.size(); i++) {
            inputIndexes[i] = indexOf(columns, inputs.get(i).name());
            if (inputIndexes[i] < 0) {
                throw new SQLException("table " + table + " has no column " + inputs.get(i).name()
                        + " for input " + (i + 1) + " of model " + modelId + " (its inputs: "
                        + SqlFunctions.names(inputs) + ")");
            }
        }
        int prediction = indexOf(columns, OutputColumn.PREDICTION);
        if (prediction < 0) {
            throw new SQLException("table " + table + " has no " + OutputColumn.PREDICTION
                    + " column for the predictions of model " + modelId);
        }
        List<OutputColumn> outputs = runner.outputs();
        int[] outputIndexes = new int[outputs.size()];
        outputIndexes[0] = prediction;
        for (int i = 1; i < outputs.size(); i++) {
            int index = indexOf(columns, outputs.get(i).name());
            outputIndexes[i] = contains(inputIndexes, index) ? -1 : index; // never overwrite an input
        }
        return new TableBinding(table, inputIndexes, outputIndexes);
    }

    private static boolean contains(int[] indexes, int index) {
        for (int i : indexes) {
            if (i == index) {
                return true;
            }
        }
        return false;
    }

    private static int indexOf(List<String> columns, String name) {
        int loose = -1;
        for (int i = 0; i < columns.size(); i++) {
            String column = columns.get(i);
            if (name.equals(column)) {
                return i;
            }
            if (loose < 0 && name.equalsIgnoreCase(column)) {
                loose = i;
            }
        }
        return loose;
    }

    /** The model's input values in a table row, in the model's order. */
    Object[] inputs(Object[] row) {
        Object[] values = new Object[inputIndexes.length];
        for (int i = 0; i < values.length; i++) {
            values[i] = row[inputIndexes[i]];
        }
        return values;
    }

    /** Writes a one-row output block into a table row (NaN as NULL). */
    void write(ColumnBlock outputs, Object[] row) {
        for (int i = 0; i < outputIndexes.length; i++) {
            if (outputIndexes[i] >= 0) {
                row[outputIndexes[i]] = SqlValues.value(outputs.column(i));
            }
        }
    }
}
