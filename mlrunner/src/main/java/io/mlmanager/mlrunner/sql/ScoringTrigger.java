package io.mlmanager.mlrunner.sql;

import io.mlmanager.mlrunner.block.ColumnBlock;
import io.mlmanager.mlrunner.cache.ModelClosedException;
import io.mlmanager.mlrunner.runner.Runner;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.List;
import org.h2.api.Trigger;

/**
 * A BEFORE INSERT (or UPDATE) row trigger that scores each new row with a model from
 * {@code MLMANAGER_MODELS} and writes the prediction into it.
 *
 * <p>The trigger's name says which model: {@code RUNMODEL_<TABLE>_<MODEL_ID>}. The model id
 * is matched exactly, then case-insensitively (an unquoted trigger name is upper case). The
 * table needs a column per model input (same name, any case) and a {@code PREDICTION} column;
 * a classifier also fills the columns named like its classes (any case) that the table has.
 *
 * <pre>
 * CREATE TRIGGER RUNMODEL_SCORED_CHURN BEFORE INSERT ON SCORED FOR EACH ROW
 *     CALL "io.mlmanager.mlrunner.sql.ScoringTrigger";
 * </pre>
 */
public final class ScoringTrigger implements Trigger {
    /** How trigger names start. */
    public static final String PREFIX = "RUNMODEL_";

    private String modelId;
    private String tableName;
    private List<String> columns;
    /** The runner the binding was made for; replaced as a whole when the model is reloaded. */
    private volatile Bound bound;

    private record Bound(Runner runner, TableBinding binding) {}

    @Override
    public void init(Connection connection, String schemaName, String triggerName, String tableName,
            boolean before, int type) throws SQLException {
        if (!before || (type & (INSERT | UPDATE)) == 0 || (type & (DELETE | SELECT)) != 0) {
            throw new SQLException("trigger " + triggerName
                    + ": ScoringTrigger must be a BEFORE INSERT or BEFORE UPDATE row trigger");
        }
        this.modelId = modelId(triggerName, tableName);
        this.tableName = tableName;
        this.columns = columns(connection, schemaName, tableName);
        this.bound = bind(SqlModels.runner(connection, modelId));
    }

    /** The model id in a trigger name {@code RUNMODEL_<TABLE>_<MODEL_ID>}. */
    static String modelId(String triggerName, String tableName) throws SQLException {
        String prefix = PREFIX + tableName + "_";
        if (triggerName.length() > prefix.length() && triggerName.regionMatches(true, 0, prefix, 0, prefix.length())) {
            return triggerName.substring(prefix.length());
        }
        throw new SQLException("trigger " + triggerName + " on " + tableName
                + ": name a ScoringTrigger " + prefix + "<MODEL_ID>, the MODEL_ID of its model in "
                + SqlModels.TABLE);
    }

    private static List<String> columns(Connection connection, String schema, String table) throws SQLException {
        List<String> names = new ArrayList<>();
        try (ResultSet rows = connection.getMetaData().getColumns(null, schema, table, null)) {
            while (rows.next()) {
                int position = rows.getInt("ORDINAL_POSITION");
                while (names.size() < position) {
                    names.add(null);
                }
                names.set(position - 1, rows.getString("COLUMN_NAME"));
            }
        }
        if (names.isEmpty()) {
            throw new SQLException("table " + schema + "." + table + " has no columns to score");
        }
        return names;
    }

    private Bound bind(Runner runner) throws SQLException {
        return new Bound(runner, TableBinding.of(runner, columns, tableName, modelId));
    }

    @Override
    public void fire(Connection connection, Object[] oldRow, Object[] newRow) throws SQLException {
        for (int attempt = 1; ; attempt++) {
            Runner runner = SqlModels.runner(connection, modelId);
            Bound current = bound;
            if (current.runner() != runner) {
                current = bind(runner); // the model was reloaded: its inputs may have moved
                bound = current;
            }
            TableBinding binding = current.binding();
            ColumnBlock outputs;
            try {
                outputs = runner.score(SqlValues.row(runner.inputs(), binding.inputs(newRow)));
            } catch (ModelClosedException e) {
                if (attempt == 2) {
                    throw new SQLException(e.getMessage(), e);
                }
                continue;
            } catch (IllegalArgumentException e) {
                throw new SQLException("trigger for model " + modelId + " on " + tableName + ": "
                        + e.getMessage(), e);
            }
            binding.write(outputs, newRow);
            return;
        }
    }

    @Override
    public String toString() {
        return "ScoringTrigger[" + modelId + " on " + tableName + "]";
    }
}
