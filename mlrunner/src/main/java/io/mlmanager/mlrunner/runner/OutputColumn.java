package io.mlmanager.mlrunner.runner;

import io.mlmanager.mlrunner.block.ColumnType;
import java.util.ArrayList;
import java.util.List;

/** A column of the blocks a runner returns. */
public record OutputColumn(String name, ColumnType type) {
    /** The name of the label, value or cluster column. */
    public static final String PREDICTION = "PREDICTION";

    /**
     * The output columns of a model: {@code PREDICTION} (text label, float64 value or int64
     * cluster), then for a classifier that gives probabilities one float64 column per class.
     */
    public static List<OutputColumn> of(ModelKind kind, List<String> classes, boolean probabilities) {
        List<OutputColumn> outputs = new ArrayList<>();
        switch (kind) {
            case CLASSIFICATION:
                outputs.add(new OutputColumn(PREDICTION, ColumnType.TEXT));
                if (probabilities) {
                    for (String label : classes) {
                        outputs.add(new OutputColumn(label, ColumnType.FLOAT64));
                    }
                }
                break;
            case REGRESSION:
                outputs.add(new OutputColumn(PREDICTION, ColumnType.FLOAT64));
                break;
            default:
                outputs.add(new OutputColumn(PREDICTION, ColumnType.INT64));
        }
        return List.copyOf(outputs);
    }
}
