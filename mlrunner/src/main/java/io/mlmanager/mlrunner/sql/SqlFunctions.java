package io.mlmanager.mlrunner.sql;

import io.mlmanager.mlrunner.block.ColumnBlock;
import io.mlmanager.mlrunner.cache.ModelClosedException;
import io.mlmanager.mlrunner.runner.InputColumn;
import io.mlmanager.mlrunner.runner.Runner;
import io.mlmanager.mlrunner.runner.Runners;
import java.sql.Connection;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.List;

/**
 * Static methods to register as SQL functions in a Java database (H2):
 *
 * <pre>
 * CREATE ALIAS MLR_LOAD FOR "io.mlmanager.mlrunner.sql.SqlFunctions.load";
 * CREATE ALIAS MLR_PREDICT FOR "io.mlmanager.mlrunner.sql.SqlFunctions.predict";
 * CREATE ALIAS MLR_PROBABILITY FOR "io.mlmanager.mlrunner.sql.SqlFunctions.probability";
 * CREATE ALIAS MLR_UNLOAD FOR "io.mlmanager.mlrunner.sql.SqlFunctions.unload";
 * </pre>
 *
 * <p>Features are passed in the model's input order. H2 hands them over as text (its
 * varargs of {@code Object} do not accept SQL values), so a numeric input's text is parsed
 * and a categorical input takes the text as its level: pass integer-coded levels as INTEGER
 * or VARCHAR, not DOUBLE ({@code 1.0} is not level {@code 1}). SQL NULL is a missing value.
 * A model not loaded with {@code MLR_LOAD} is read from the {@code MLMANAGER_MODELS} table on
 * first use (see {@link SqlModels}).
 */
public final class SqlFunctions {
    private SqlFunctions() {}

    /** {@code MLR_LOAD(model_id)}: (re)loads a model from {@code MLMANAGER_MODELS}; its JSON description. */
    public static String load(Connection connection, String modelId) throws SQLException {
        return Runners.describe(SqlModels.reload(connection, modelId));
    }

    /** {@code MLR_LOAD(model_id, format, payload)}: loads a MOJO; its JSON description. */
    public static String load(String modelId, String format, byte[] payload) {
        return load(modelId, format, payload, null);
    }

    /** {@code MLR_LOAD(model_id, format, payload, metadata)}: loads a MOJO or ONNX model; its JSON description. */
    public static String load(String modelId, String format, byte[] payload, String metadataJson) {
        return Runners.describe(SqlModels.load(modelId, format, payload, metadataJson));
    }

    /** {@code MLR_UNLOAD(model_id)}: drops a model from the cache; whether it was there. */
    public static boolean unload(String modelId) {
        return SqlModels.cache().remove(modelId);
    }

    /**
     * {@code MLR_PREDICT(model_id, feature1, feature2...)}: one row's prediction, the label
     * (classification), the value (regression) or the cluster index (clustering), as text.
     * NULL when the model cannot tell.
     */
    public static String predict(Connection connection, String modelId, String... features) throws SQLException {
        Object value = SqlValues.prediction(score(connection, modelId, features).outputs());
        return value == null ? null : value.toString();
    }

    /**
     * {@code MLR_PREDICT_VALUE(model_id, features...)}: a regression value or cluster index as a
     * number (NULL when missing).
     */
    public static Double predictValue(Connection connection, String modelId, String... features)
            throws SQLException {
        Object value = SqlValues.prediction(score(connection, modelId, features).outputs());
        if (value == null) {
            return null;
        }
        if (value instanceof Number number) {
            return number.doubleValue();
        }
        throw new SQLException("model " + modelId + " predicts labels, not numbers: use MLR_PREDICT");
    }

    /** {@code MLR_PROBABILITY(model_id, class, features...)}: the probability of one class (NULL when unknown). */
    public static Double probability(Connection connection, String modelId, String className, String... features)
            throws SQLException {
        Scored scored = score(connection, modelId, features);
        List<String> classes = scored.runner().classes();
        int index = classes.indexOf(className);
        for (int i = 0; index < 0 && i < classes.size(); i++) {
            if (classes.get(i).equalsIgnoreCase(className)) {
                index = i;
            }
        }
        if (index < 0) {
            throw new SQLException("model " + modelId + " has no class " + className + " (its classes: "
                    + String.join(", ", classes) + ")");
        }
        if (scored.outputs().columns().size() <= 1 + index) {
            throw new SQLException("model " + modelId + " gives no class probabilities");
        }
        return (Double) SqlValues.value(scored.outputs().column(1 + index));
    }

    private record Scored(Runner runner, ColumnBlock outputs) {}

    private static Scored score(Connection connection, String modelId, String[] features) throws SQLException {
        for (int attempt = 1; ; attempt++) {
            Runner runner = SqlModels.runner(connection, modelId);
            List<InputColumn> inputs = runner.inputs();
            Object[] values = features == null ? new Object[] {null} : features;
            if (values.length != inputs.size()) {
                throw new SQLException("model " + modelId + " takes " + inputs.size() + " features ("
                        + names(inputs) + "), in that order; got " + values.length);
            }
            try {
                return new Scored(runner, runner.score(SqlValues.row(inputs, values)));
            } catch (ModelClosedException e) {
                if (attempt == 2) {
                    throw new SQLException(e.getMessage(), e);
                }
            } catch (IllegalArgumentException e) {
                throw new SQLException("model " + modelId + ": " + e.getMessage(), e);
            }
        }
    }

    static String names(List<InputColumn> inputs) {
        List<String> names = new ArrayList<>();
        inputs.forEach(input -> names.add(input.name()));
        return String.join(", ", names);
    }
}
