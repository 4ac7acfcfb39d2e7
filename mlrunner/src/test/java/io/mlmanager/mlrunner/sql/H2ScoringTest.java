package io.mlmanager.mlrunner.sql;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mlmanager.mlrunner.Fixtures;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.StringJoiner;
import java.util.UUID;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** The trigger and SQL functions inside an in-memory H2 database, compared with the fixtures. */
class H2ScoringTest {
    private Connection connection;

    @BeforeEach
    void open() throws SQLException {
        SqlModels.cache().close();
        connection = DriverManager.getConnection("jdbc:h2:mem:mlr_" + UUID.randomUUID());
        execute("CREATE TABLE MLMANAGER_MODELS(MODEL_ID VARCHAR PRIMARY KEY, FORMAT VARCHAR, PAYLOAD BLOB,"
                + " METADATA VARCHAR)");
        execute("CREATE ALIAS MLR_LOAD FOR \"io.mlmanager.mlrunner.sql.SqlFunctions.load\"");
        execute("CREATE ALIAS MLR_PREDICT FOR \"io.mlmanager.mlrunner.sql.SqlFunctions.predict\"");
        execute("CREATE ALIAS MLR_PREDICT_VALUE FOR \"io.mlmanager.mlrunner.sql.SqlFunctions.predictValue\"");
        execute("CREATE ALIAS MLR_PROBABILITY FOR \"io.mlmanager.mlrunner.sql.SqlFunctions.probability\"");
        execute("CREATE ALIAS MLR_UNLOAD FOR \"io.mlmanager.mlrunner.sql.SqlFunctions.unload\"");
    }

    @AfterEach
    void close() throws SQLException {
        connection.close();
        SqlModels.cache().close();
    }

    private void execute(String sql) throws SQLException {
        try (Statement statement = connection.createStatement()) {
            statement.execute(sql);
        }
    }

    private void store(String id, Fixtures.Model model) throws SQLException {
        try (PreparedStatement insert = connection.prepareStatement(
                "INSERT INTO MLMANAGER_MODELS VALUES (?, ?, ?, ?)")) {
            insert.setString(1, id);
            insert.setString(2, model.format());
            insert.setBytes(3, model.payload());
            insert.setString(4, model.metadataJson());
            insert.executeUpdate();
        }
    }

    /** Inserts the fixture rows: the first alone, the rest in one multi-row INSERT. */
    private void insertRows(String table, Fixtures.Model model, List<String> columns) throws SQLException {
        insert(table, model, columns, 0, 1);
        insert(table, model, columns, 1, model.rows());
    }

    private void insert(String table, Fixtures.Model model, List<String> columns, int from, int to)
            throws SQLException {
        StringJoiner rows = new StringJoiner(", ");
        String marks = "(?" + ", ?".repeat(columns.size()) + ")";
        for (int r = from; r < to; r++) {
            rows.add(marks);
        }
        String sql = "INSERT INTO " + table + " (ID, " + String.join(", ", columns) + ") VALUES " + rows;
        try (PreparedStatement insert = connection.prepareStatement(sql)) {
            int p = 1;
            for (int r = from; r < to; r++) {
                insert.setInt(p++, r);
                Object[] values = model.sqlRow(r);
                for (int c = 0; c < columns.size(); c++) {
                    Object value = values[c];
                    if ("GRADE".equals(columns.get(c)) && value != null) {
                        value = (int) (double) (Double) value; // an INTEGER column holding the level
                    }
                    insert.setObject(p++, value);
                }
            }
            assertEquals(to - from, insert.executeUpdate());
        }
    }

    @Test
    void theTriggerScoresInsertedRowsWithAMojoClassifier() throws SQLException {
        Fixtures.Model model = Fixtures.model("gbm_binomial");
        store("churn", model);
        execute("CREATE TABLE SCORED(ID INT PRIMARY KEY, X1 DOUBLE, X2 DOUBLE, X3 DOUBLE, COLOR VARCHAR,"
                + " GRADE INT, PREDICTION VARCHAR, NO DOUBLE, \"yes\" DOUBLE)");
        execute("CREATE TRIGGER RUNMODEL_SCORED_CHURN BEFORE INSERT ON SCORED FOR EACH ROW"
                + " CALL \"io.mlmanager.mlrunner.sql.ScoringTrigger\"");
        insertRows("SCORED", model, List.of("X1", "X2", "X3", "COLOR", "GRADE"));
        try (Statement statement = connection.createStatement();
                ResultSet rows = statement.executeQuery("SELECT ID, PREDICTION, NO, \"yes\" FROM SCORED ORDER BY ID")) {
            int count = 0;
            while (rows.next()) {
                String[] expected = model.expected().get(rows.getInt(1));
                assertEquals(expected[0], rows.getString(2), "row " + rows.getInt(1));
                assertEquals(Double.parseDouble(expected[1]), rows.getDouble(3), 1e-6);
                assertEquals(Double.parseDouble(expected[2]), rows.getDouble(4), 1e-6);
                count++;
            }
            assertEquals(model.rows(), count);
        }
    }

    @Test
    void theTriggerScoresWithOnnxAndLeavesMissingClassColumnsAlone() throws SQLException {
        Fixtures.Model model = Fixtures.model("ridge");
        store("ridge", model);
        execute("CREATE TABLE RIDGE_SCORED(ID INT PRIMARY KEY, x1 DOUBLE, x2 DOUBLE, color VARCHAR,"
                + " PREDICTION DOUBLE)");
        execute("CREATE TRIGGER RUNMODEL_RIDGE_SCORED_RIDGE BEFORE INSERT ON RIDGE_SCORED FOR EACH ROW"
                + " CALL \"io.mlmanager.mlrunner.sql.ScoringTrigger\"");
        insertRows("RIDGE_SCORED", model, List.of("X1", "X2", "COLOR"));
        try (Statement statement = connection.createStatement();
                ResultSet rows = statement.executeQuery("SELECT ID, PREDICTION FROM RIDGE_SCORED ORDER BY ID")) {
            int count = 0;
            while (rows.next()) {
                double expected = Double.parseDouble(model.expected().get(rows.getInt(1))[0]);
                assertEquals(expected, rows.getDouble(2), 1e-4 * Math.max(1, Math.abs(expected)));
                count++;
            }
            assertEquals(model.rows(), count);
        }
    }

    @Test
    void theTriggerSaysWhatIsMissing() throws SQLException {
        store("churn", Fixtures.model("gbm_binomial"));
        execute("CREATE TABLE NO_GRADE(ID INT, X1 DOUBLE, X2 DOUBLE, X3 DOUBLE, COLOR VARCHAR, PREDICTION VARCHAR)");
        SQLException noColumn = assertThrows(SQLException.class, () -> execute(
                "CREATE TRIGGER RUNMODEL_NO_GRADE_CHURN BEFORE INSERT ON NO_GRADE FOR EACH ROW"
                        + " CALL \"io.mlmanager.mlrunner.sql.ScoringTrigger\""));
        assertTrue(noColumn.getMessage().contains("table NO_GRADE has no column grade"), noColumn.getMessage());
        SQLException noModel = assertThrows(SQLException.class, () -> execute(
                "CREATE TRIGGER RUNMODEL_NO_GRADE_OTHER BEFORE INSERT ON NO_GRADE FOR EACH ROW"
                        + " CALL \"io.mlmanager.mlrunner.sql.ScoringTrigger\""));
        assertTrue(noModel.getMessage().contains("no model OTHER in MLMANAGER_MODELS"), noModel.getMessage());
        SQLException badName = assertThrows(SQLException.class, () -> execute(
                "CREATE TRIGGER SCORE_IT BEFORE INSERT ON NO_GRADE FOR EACH ROW"
                        + " CALL \"io.mlmanager.mlrunner.sql.ScoringTrigger\""));
        assertTrue(badName.getMessage().contains("RUNMODEL_NO_GRADE_<MODEL_ID>"), badName.getMessage());
        SQLException after = assertThrows(SQLException.class, () -> execute(
                "CREATE TRIGGER RUNMODEL_NO_GRADE_CHURN AFTER INSERT ON NO_GRADE FOR EACH ROW"
                        + " CALL \"io.mlmanager.mlrunner.sql.ScoringTrigger\""));
        assertTrue(after.getMessage().contains("must be a BEFORE INSERT or BEFORE UPDATE row trigger"),
                after.getMessage());
    }

    @Test
    void sqlFunctionsPredictLikeTheFixtures() throws SQLException {
        Fixtures.Model kmeans = Fixtures.model("kmeans");
        try (PreparedStatement load = connection.prepareStatement("SELECT MLR_LOAD('km', 'mojo', ?)")) {
            load.setBytes(1, kmeans.payload());
            try (ResultSet result = load.executeQuery()) {
                result.next();
                assertTrue(result.getString(1).contains("\"kind\":\"clustering\""), result.getString(1));
            }
        }
        execute("CREATE TABLE POINTS(ID INT, X1 DOUBLE, X2 DOUBLE, X3 DOUBLE)");
        insert("POINTS", kmeans, List.of("X1", "X2", "X3"), 0, kmeans.rows());
        List<String> clusters = new ArrayList<>();
        try (Statement statement = connection.createStatement();
                ResultSet rows = statement.executeQuery(
                        "SELECT MLR_PREDICT('km', X1, X2, X3), MLR_PREDICT_VALUE('km', X1, X2, X3)"
                                + " FROM POINTS ORDER BY ID")) {
            while (rows.next()) {
                clusters.add(rows.getString(1));
                assertEquals(Double.parseDouble(rows.getString(1)), rows.getDouble(2));
            }
        }
        List<String> expected = new ArrayList<>();
        kmeans.expected().forEach(row -> expected.add(row[0]));
        assertEquals(expected, clusters);
    }

    @Test
    void sqlFunctionsLoadFromTheModelsTableAndGiveProbabilities() throws SQLException {
        Fixtures.Model model = Fixtures.model("gbm_binomial");
        store("churn", model);
        Object[] row = model.sqlRow(0);
        String sql = "SELECT MLR_PREDICT('churn', ?, ?, ?, ?, ?), MLR_PROBABILITY('churn', 'YES', ?, ?, ?, ?, ?)";
        try (PreparedStatement query = connection.prepareStatement(sql)) {
            for (int i = 0; i < 5; i++) {
                Object value = i == 4 ? Integer.valueOf((int) (double) (Double) row[4]) : row[i];
                query.setObject(1 + i, value);
                query.setObject(6 + i, value);
            }
            try (ResultSet result = query.executeQuery()) {
                result.next();
                assertEquals(model.expected().get(0)[0], result.getString(1));
                assertEquals(Double.parseDouble(model.expected().get(0)[2]), result.getDouble(2), 1e-6);
            }
        }
        try (Statement statement = connection.createStatement();
                ResultSet result = statement.executeQuery(
                        "SELECT MLR_PROBABILITY('churn', 'no', NULL, NULL, NULL, NULL, NULL)")) {
            result.next();
            double p = result.getDouble(1);
            assertTrue(p > 0 && p < 1, "probability with every feature missing: " + p);
        }
        assertEquals(1, SqlModels.cache().size());
    }

    @Test
    void sqlFunctionsSayWhatIsWrong() throws SQLException {
        store("churn", Fixtures.model("gbm_binomial"));
        SQLException count = assertThrows(SQLException.class, () -> execute("SELECT MLR_PREDICT('churn', 1, 2)"));
        assertTrue(count.getMessage().contains("model churn takes 5 features (x1, x2, x3, color, grade)"),
                count.getMessage());
        SQLException text = assertThrows(SQLException.class,
                () -> execute("SELECT MLR_PREDICT('churn', 'one', 2, 3, 'red', 1)"));
        assertTrue(text.getMessage().contains("input x1 is numeric, and 'one' is not a number"), text.getMessage());
        SQLException klass = assertThrows(SQLException.class,
                () -> execute("SELECT MLR_PROBABILITY('churn', 'maybe', 1, 2, 3, 'red', 1)"));
        assertTrue(klass.getMessage().contains("has no class maybe (its classes: no, yes)"), klass.getMessage());
        SQLException label = assertThrows(SQLException.class,
                () -> execute("SELECT MLR_PREDICT_VALUE('churn', 1, 2, 3, 'red', 1)"));
        assertTrue(label.getMessage().contains("predicts labels, not numbers"), label.getMessage());
        SQLException missing = assertThrows(SQLException.class, () -> execute("SELECT MLR_PREDICT('ghost', 1)"));
        assertTrue(missing.getMessage().contains("no model ghost in MLMANAGER_MODELS"), missing.getMessage());
    }

    @Test
    void mlrLoadOfOneIdReloadsFromTheTable() throws SQLException {
        store("churn", Fixtures.model("gbm_binomial"));
        try (Statement statement = connection.createStatement();
                ResultSet result = statement.executeQuery("SELECT MLR_LOAD('churn'), MLR_UNLOAD('churn')")) {
            result.next();
            assertTrue(result.getString(1).contains("\"classes\":[\"no\",\"yes\"]"), result.getString(1));
            assertTrue(result.getBoolean(2));
        }
        assertEquals(0, SqlModels.cache().size());
        assertNull(SqlModels.cache().get("churn"));
    }
}
