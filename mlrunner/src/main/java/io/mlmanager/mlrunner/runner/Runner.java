package io.mlmanager.mlrunner.runner;

import io.mlmanager.mlrunner.block.ColumnBlock;
import java.util.List;

/**
 * A loaded model that scores whole blocks of rows.
 *
 * <p>Inputs are matched to the block's columns by name; other columns are ignored. The
 * output block holds the {@link #outputs()} columns, one value per input row. Implementations
 * are safe to call from several threads at once. {@link #close()} frees native resources
 * (an ONNX session); a closed runner must not be used again.
 */
public interface Runner extends AutoCloseable {

    /** What the model predicts. */
    ModelKind kind();

    /** The inputs the model reads, in the model's order. */
    List<InputColumn> inputs();

    /** The class labels of a classifier, in the order of its probability columns; else empty. */
    List<String> classes();

    /** The columns of the blocks {@link #score} returns. */
    List<OutputColumn> outputs();

    /**
     * The type of the labels in {@code PREDICTION} of a classifier, as the model gives them
     * (the block always holds them as text).
     */
    default LabelType labelType() {
        return LabelType.TEXT;
    }

    /** The format the model was loaded from ({@code mojo} or {@code onnx}). */
    String format();

    /**
     * Scores every row of {@code inputs}.
     *
     * @throws IllegalArgumentException if a model input is missing from the block or a value
     *     cannot be read as the model needs it
     */
    ColumnBlock score(ColumnBlock inputs);

    @Override
    void close();
}
