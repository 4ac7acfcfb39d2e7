package io.mlmanager.mlrunner.runner;

import hex.ModelCategory;
import hex.genmodel.MojoModel;
import hex.genmodel.MojoReaderBackend;
import hex.genmodel.MojoReaderBackendFactory;
import hex.genmodel.easy.EasyPredictModelWrapper;
import hex.genmodel.easy.RowData;
import hex.genmodel.easy.exception.PredictException;
import hex.genmodel.easy.prediction.AbstractPrediction;
import hex.genmodel.easy.prediction.BinomialModelPrediction;
import hex.genmodel.easy.prediction.ClusteringModelPrediction;
import hex.genmodel.easy.prediction.MultinomialModelPrediction;
import hex.genmodel.easy.prediction.RegressionModelPrediction;
import io.mlmanager.mlrunner.block.Column;
import io.mlmanager.mlrunner.block.ColumnBlock;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ForkJoinPool;
import java.util.function.IntConsumer;
import java.util.stream.IntStream;

/**
 * An H2O MOJO scored through {@link EasyPredictModelWrapper}.
 *
 * <p>Binomial and multinomial models give a label and one probability per class (in the order
 * of the response domain), regression models a value, K-means the cluster index. Inputs are
 * matched by name to the model's features. A NaN number or a null text is a missing value;
 * unknown categorical levels and unparseable numbers are missing values too, as H2O treats
 * them. A number sent for a categorical feature is passed as its text ({@code 1.0} as "1").
 *
 * <p>A block of at least {@value #PARALLEL_ROWS} rows is scored on several threads, in chunks of
 * {@value #CHUNK_ROWS} rows: the system property {@code mlrunner.threads} (default: the
 * processors) sizes the pool, {@code -Dmlrunner.threads=1} scores on the caller's thread.
 */
public final class MojoRunner implements Runner {
    static final int PARALLEL_ROWS = 4096;
    static final int CHUNK_ROWS = 2048;
    private static final ForkJoinPool POOL = new ForkJoinPool(Math.max(1,
            Integer.getInteger("mlrunner.threads", Runtime.getRuntime().availableProcessors())));

    private final EasyPredictModelWrapper wrapper;
    private final ModelCategory category;
    private final ModelKind kind;
    private final List<InputColumn> inputs;
    private final List<String> classes;
    private final List<OutputColumn> outputs;
    /** Deep Learning MOJOs are the only ones H2O documents as not thread-safe. */
    private final boolean serial;

    private MojoRunner(MojoModel model) {
        this.category = model.getModelCategory();
        this.kind = kindOf(category);
        this.inputs = featuresOf(model);
        this.classes = kind == ModelKind.CLASSIFICATION
                ? List.of(model.getDomainValues(model.getResponseIdx()))
                : List.of();
        this.outputs = OutputColumn.of(kind, classes, true);
        this.serial = String.valueOf(model._algoName).toLowerCase(Locale.ROOT).contains("deep");
        this.wrapper = new EasyPredictModelWrapper(new EasyPredictModelWrapper.Config()
                .setModel(model)
                .setConvertUnknownCategoricalLevelsToNa(true)
                .setConvertInvalidNumbersToNa(true));
    }

    /**
     * Loads a MOJO zip held in memory.
     *
     * @throws IllegalArgumentException if the bytes are not a MOJO or its category is not supported
     */
    public static MojoRunner load(byte[] mojoZip) {
        if (mojoZip == null || mojoZip.length == 0) {
            throw new IllegalArgumentException("the MOJO payload is empty");
        }
        MojoModel model;
        try {
            MojoReaderBackend reader = MojoReaderBackendFactory.createReaderBackend(
                    new ByteArrayInputStream(mojoZip), MojoReaderBackendFactory.CachingStrategy.MEMORY);
            model = MojoModel.load(reader);
        } catch (IOException | RuntimeException e) {
            throw new IllegalArgumentException("cannot read the payload as an H2O MOJO zip: " + e, e);
        }
        return new MojoRunner(model);
    }

    private static ModelKind kindOf(ModelCategory category) {
        switch (category) {
            case Binomial:
            case Multinomial:
                return ModelKind.CLASSIFICATION;
            case Regression:
                return ModelKind.REGRESSION;
            case Clustering:
                return ModelKind.CLUSTERING;
            default:
                throw new IllegalArgumentException("H2O model category " + category
                        + " is not supported (Binomial, Multinomial, Regression and Clustering are)");
        }
    }

    private static List<InputColumn> featuresOf(MojoModel model) {
        String[] names = model.getNames();
        String response = model.isSupervised() ? model.getResponseName() : null;
        List<InputColumn> features = new ArrayList<>();
        for (int i = 0; i < names.length && features.size() < model.nfeatures(); i++) {
            if (!names[i].equals(response)) {
                features.add(new InputColumn(names[i], model.getDomainValues(i) == null));
            }
        }
        return List.copyOf(features);
    }

    @Override
    public ModelKind kind() {
        return kind;
    }

    @Override
    public List<InputColumn> inputs() {
        return inputs;
    }

    @Override
    public List<String> classes() {
        return classes;
    }

    @Override
    public List<OutputColumn> outputs() {
        return outputs;
    }

    @Override
    public String format() {
        return "mojo";
    }

    @Override
    public ColumnBlock score(ColumnBlock block) {
        Column[] columns = InputValues.columns(block, inputs);
        int rows = block.rows();
        if (rows == 0) {
            return Predictions.empty(outputs);
        }
        if (serial) {
            synchronized (this) {
                return scoreRows(columns, rows);
            }
        }
        return scoreRows(columns, rows);
    }

    private ColumnBlock scoreRows(Column[] columns, int rows) {
        switch (kind) {
            case CLASSIFICATION: {
                String[] labels = new String[rows];
                double[][] probabilities = new double[classes.size()][rows];
                eachRow(rows, row -> {
                    AbstractPrediction prediction = predict(columns, row);
                    String label;
                    double[] p;
                    if (prediction instanceof BinomialModelPrediction binomial) {
                        label = binomial.label;
                        p = binomial.classProbabilities;
                    } else {
                        MultinomialModelPrediction multinomial = (MultinomialModelPrediction) prediction;
                        label = multinomial.label;
                        p = multinomial.classProbabilities;
                    }
                    labels[row] = label;
                    for (int c = 0; c < probabilities.length; c++) {
                        probabilities[c][row] = p[c];
                    }
                });
                return Predictions.classification(labels, probabilities, classes);
            }
            case REGRESSION: {
                double[] values = new double[rows];
                eachRow(rows, row -> values[row] = ((RegressionModelPrediction) predict(columns, row)).value);
                return Predictions.regression(values);
            }
            default: {
                long[] clusters = new long[rows];
                eachRow(rows, row -> clusters[row] = ((ClusteringModelPrediction) predict(columns, row)).cluster);
                return Predictions.clustering(clusters);
            }
        }
    }

    /**
     * Runs {@code action} for every row: on the caller's thread for small blocks and serial
     * models, else in chunks on the pool (each row writes only its own slots of the outputs).
     */
    private void eachRow(int rows, IntConsumer action) {
        if (serial || rows < PARALLEL_ROWS || POOL.getParallelism() == 1) {
            for (int row = 0; row < rows; row++) {
                action.accept(row);
            }
            return;
        }
        int chunks = (rows + CHUNK_ROWS - 1) / CHUNK_ROWS;
        try {
            POOL.submit(() -> IntStream.range(0, chunks).parallel().forEach(chunk -> {
                int end = Math.min(rows, (chunk + 1) * CHUNK_ROWS);
                for (int row = chunk * CHUNK_ROWS; row < end; row++) {
                    action.accept(row);
                }
            })).get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("scoring was interrupted", e);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof RuntimeException runtime) {
                throw runtime;
            }
            throw new IllegalStateException(e.getCause());
        }
    }

    private AbstractPrediction predict(Column[] columns, int row) {
        RowData data = new RowData();
        for (int i = 0; i < columns.length; i++) {
            Object value = value(columns[i], row, inputs.get(i).numeric());
            if (value != null) {
                data.put(inputs.get(i).name(), value);
            }
        }
        try {
            return wrapper.predict(data, category);
        } catch (PredictException | RuntimeException e) {
            throw new IllegalArgumentException("H2O could not score row " + row + ": " + e.getMessage(), e);
        }
    }

    /** The RowData value of one cell: null when missing, a Double or a String otherwise. */
    private static Object value(Column column, int row, boolean numeric) {
        if (column instanceof Column.Float64 numbers) {
            double v = numbers.values()[row];
            if (Double.isNaN(v)) {
                return null;
            }
            return numeric ? (Object) v : NumberText.level(v);
        }
        if (column instanceof Column.Int64 integers) {
            long v = integers.values()[row];
            return numeric ? (Object) (double) v : Long.toString(v);
        }
        return ((Column.Text) column).values()[row];
    }

    @Override
    public void close() {
        // A MOJO holds only heap memory.
    }

    @Override
    public String toString() {
        return "MojoRunner[" + category + ", inputs=" + Arrays.toString(inputs.toArray()) + "]";
    }
}
