package io.mlmanager.mlrunner.runner;

import io.mlmanager.mlrunner.block.Column;
import io.mlmanager.mlrunner.block.ColumnBlock;
import java.util.ArrayList;
import java.util.List;

/** Output blocks in the shape every runner returns (see {@link OutputColumn#of}). */
final class Predictions {
    private Predictions() {}

    /**
     * A classifier's block: {@code PREDICTION} then one column per class. A row whose
     * probabilities hold a NaN gets a null label and NaN for every class, since its argmax
     * means nothing (as the Python scorer does).
     *
     * @param probabilities one array of rows per class, or {@code null} when the model gives none
     */
    static ColumnBlock classification(String[] labels, double[][] probabilities, List<String> classes) {
        List<Column> columns = new ArrayList<>();
        columns.add(new Column.Text(OutputColumn.PREDICTION, labels));
        if (probabilities != null) {
            if (probabilities.length != classes.size()) {
                throw new IllegalArgumentException("the model gives " + probabilities.length
                        + " probabilities per row for " + classes.size() + " classes " + classes);
            }
            blankUnknownRows(labels, probabilities);
            for (int c = 0; c < probabilities.length; c++) {
                columns.add(new Column.Float64(classes.get(c), probabilities[c]));
            }
        }
        return new ColumnBlock(labels.length, columns);
    }

    private static void blankUnknownRows(String[] labels, double[][] probabilities) {
        for (int row = 0; row < labels.length; row++) {
            boolean unknown = false;
            for (double[] column : probabilities) {
                unknown |= Double.isNaN(column[row]);
            }
            if (unknown) {
                labels[row] = null;
                for (double[] column : probabilities) {
                    column[row] = Double.NaN;
                }
            }
        }
    }

    /** A regressor's block: one float64 {@code PREDICTION} (NaN when unknown). */
    static ColumnBlock regression(double[] values) {
        return ColumnBlock.of(new Column.Float64(OutputColumn.PREDICTION, values));
    }

    /** A clustering model's block: one int64 {@code PREDICTION}, the cluster index. */
    static ColumnBlock clustering(long[] clusters) {
        return ColumnBlock.of(new Column.Int64(OutputColumn.PREDICTION, clusters));
    }

    /** The empty block of these outputs (a batch of no rows). */
    static ColumnBlock empty(List<OutputColumn> outputs) {
        List<Column> columns = new ArrayList<>();
        for (OutputColumn output : outputs) {
            switch (output.type()) {
                case TEXT:
                    columns.add(new Column.Text(output.name(), new String[0]));
                    break;
                case INT64:
                    columns.add(new Column.Int64(output.name(), new long[0]));
                    break;
                default:
                    columns.add(new Column.Float64(output.name(), new double[0]));
            }
        }
        return new ColumnBlock(0, columns);
    }
}
