package io.mlmanager.mlrunner.runner;

import static io.mlmanager.mlrunner.Fixtures.assertOutputs;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mlmanager.mlrunner.Fixtures;
import io.mlmanager.mlrunner.block.Column;
import io.mlmanager.mlrunner.block.ColumnBlock;
import io.mlmanager.mlrunner.block.ColumnType;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** MOJO scoring against H2O's own in-cluster predictions (fixtures from make_fixtures.py). */
class MojoRunnerTest {
    /** MOJO vs H2O: relative to max(1, |expected|). */
    private static final double TOLERANCE = 1e-6;

    @ParameterizedTest
    @ValueSource(strings = {"gbm_binomial", "gbm_multinomial", "gbm_regression", "kmeans"})
    void scoresLikeH2o(String name) {
        Fixtures.Model model = Fixtures.model(name);
        try (MojoRunner runner = MojoRunner.load(model.payload())) {
            assertEquals(model.kind(), runner.kind().label());
            assertEquals(model.classes(), runner.classes());
            assertOutputs(model, runner.score(model.inputs()), TOLERANCE);
        }
    }

    /** Blocks of many rows are scored on several threads: each row as in a small block. */
    @ParameterizedTest
    @ValueSource(strings = {"gbm_binomial", "gbm_multinomial", "gbm_regression", "kmeans"})
    void largeBlocksScoreEveryRowAsSmallOnes(String name) {
        Fixtures.Model model = Fixtures.model(name);
        int times = 2 * MojoRunner.PARALLEL_ROWS / model.rows() + 1;
        try (MojoRunner runner = MojoRunner.load(model.payload())) {
            ColumnBlock small = runner.score(model.inputs());
            ColumnBlock large = runner.score(repeat(model.inputs(), times));
            assertEquals(model.rows() * times, large.rows());
            assertTrue(large.rows() > 2 * MojoRunner.PARALLEL_ROWS);
            ColumnBlock expected = repeat(small, times);
            for (Column want : expected.columns()) {
                Column got = large.column(want.name());
                if (want instanceof Column.Float64 numbers) {
                    assertArrayEquals(numbers.values(), ((Column.Float64) got).values(), 0.0, want.name());
                } else if (want instanceof Column.Int64 integers) {
                    assertArrayEquals(integers.values(), ((Column.Int64) got).values(), want.name());
                } else {
                    assertArrayEquals(((Column.Text) want).values(), ((Column.Text) got).values(), want.name());
                }
            }
        }
    }

    private static ColumnBlock repeat(ColumnBlock block, int times) {
        int rows = block.rows();
        List<Column> columns = new ArrayList<>();
        for (Column column : block.columns()) {
            if (column instanceof Column.Float64 numbers) {
                double[] out = new double[rows * times];
                for (int t = 0; t < times; t++) {
                    System.arraycopy(numbers.values(), 0, out, t * rows, rows);
                }
                columns.add(new Column.Float64(column.name(), out));
            } else if (column instanceof Column.Int64 integers) {
                long[] out = new long[rows * times];
                for (int t = 0; t < times; t++) {
                    System.arraycopy(integers.values(), 0, out, t * rows, rows);
                }
                columns.add(new Column.Int64(column.name(), out));
            } else {
                String[] out = new String[rows * times];
                for (int t = 0; t < times; t++) {
                    System.arraycopy(((Column.Text) column).values(), 0, out, t * rows, rows);
                }
                columns.add(new Column.Text(column.name(), out));
            }
        }
        return new ColumnBlock(rows * times, columns);
    }

    @Test
    void describesTheBinomialModel() {
        MojoRunner runner = MojoRunner.load(Fixtures.model("gbm_binomial").payload());
        assertEquals(List.of(
                new InputColumn("x1", true), new InputColumn("x2", true), new InputColumn("x3", true),
                new InputColumn("color", false), new InputColumn("grade", false)), runner.inputs());
        assertEquals(List.of(
                new OutputColumn("PREDICTION", ColumnType.TEXT),
                new OutputColumn("no", ColumnType.FLOAT64),
                new OutputColumn("yes", ColumnType.FLOAT64)), runner.outputs());
        String json = Runners.describe(runner);
        assertTrue(json.contains("\"kind\":\"classification\""), json);
        assertTrue(json.contains("{\"name\":\"color\",\"type\":\"text\"}"), json);
        assertTrue(json.contains("\"classes\":[\"no\",\"yes\"]"), json);
    }

    @Test
    void regressionAndClusteringOutputTypes() {
        assertEquals(List.of(new OutputColumn("PREDICTION", ColumnType.FLOAT64)),
                MojoRunner.load(Fixtures.model("gbm_regression").payload()).outputs());
        MojoRunner kmeans = MojoRunner.load(Fixtures.model("kmeans").payload());
        assertEquals(List.of(new OutputColumn("PREDICTION", ColumnType.INT64)), kmeans.outputs());
        assertEquals(ModelKind.CLUSTERING, kmeans.kind());
        assertEquals(List.of(), kmeans.classes());
    }

    @Test
    void extraColumnsAndColumnOrderDoNotMatter() {
        Fixtures.Model model = Fixtures.model("gbm_regression");
        List<Column> reversed = new ArrayList<>(model.inputs().columns());
        java.util.Collections.reverse(reversed);
        reversed.add(new Column.Text("unused", new String[model.rows()]));
        ColumnBlock shuffled = new ColumnBlock(model.rows(), reversed);
        assertOutputs(model, MojoRunner.load(model.payload()).score(shuffled), TOLERANCE);
    }

    @Test
    void categoricalLevelsAsTextOrIntegersGiveTheSameAnswer() {
        Fixtures.Model model = Fixtures.model("gbm_binomial");
        MojoRunner runner = MojoRunner.load(model.payload());
        double[] grades = ((Column.Float64) model.inputs().column("grade")).values();
        String[] text = new String[grades.length];
        long[] integers = new long[grades.length];
        for (int i = 0; i < grades.length; i++) {
            text[i] = Long.toString((long) grades[i]);
            integers[i] = (long) grades[i];
        }
        assertOutputs(model, runner.score(replace(model.inputs(), new Column.Text("grade", text))), TOLERANCE);
        assertOutputs(model, runner.score(replace(model.inputs(), new Column.Int64("grade", integers))), TOLERANCE);
    }

    @Test
    void missingValuesAreScoredAsH2oMissing() {
        Fixtures.Model model = Fixtures.model("gbm_binomial");
        MojoRunner runner = MojoRunner.load(model.payload());
        ColumnBlock one = ColumnBlock.of(
                new Column.Float64("x1", new double[] {Double.NaN}),
                new Column.Float64("x2", new double[] {Double.NaN}),
                new Column.Float64("x3", new double[] {Double.NaN}),
                new Column.Text("color", new String[] {null}),
                new Column.Text("grade", new String[] {"not a level"}));
        ColumnBlock out = runner.score(one);
        String label = ((Column.Text) out.column("PREDICTION")).values()[0];
        assertTrue(label.equals("no") || label.equals("yes"), label);
        double p = ((Column.Float64) out.column("no")).values()[0] + ((Column.Float64) out.column("yes")).values()[0];
        assertEquals(1.0, p, 1e-9);
    }

    @Test
    void aMissingFeatureIsNamed() {
        Fixtures.Model model = Fixtures.model("gbm_multinomial");
        List<Column> columns = new ArrayList<>(model.inputs().columns());
        columns.removeIf(c -> c.name().equals("x2"));
        IllegalArgumentException error = assertThrows(IllegalArgumentException.class,
                () -> MojoRunner.load(model.payload()).score(new ColumnBlock(model.rows(), columns)));
        assertTrue(error.getMessage().contains("lacks model input x2"), error.getMessage());
    }

    @Test
    void anEmptyBatchGivesAnEmptyBlock() {
        MojoRunner runner = MojoRunner.load(Fixtures.model("gbm_multinomial").payload());
        ColumnBlock none = ColumnBlock.of(
                new Column.Float64("x1", new double[0]), new Column.Float64("x2", new double[0]),
                new Column.Float64("x3", new double[0]), new Column.Text("color", new String[0]));
        ColumnBlock out = runner.score(none);
        assertEquals(0, out.rows());
        assertEquals(4, out.columns().size());
    }

    @Test
    void garbageIsNotAMojo() {
        IllegalArgumentException error = assertThrows(IllegalArgumentException.class,
                () -> MojoRunner.load("not a zip".getBytes(java.nio.charset.StandardCharsets.UTF_8)));
        assertTrue(error.getMessage().startsWith("cannot read the payload as an H2O MOJO zip"), error.getMessage());
        assertThrows(IllegalArgumentException.class, () -> MojoRunner.load(new byte[0]));
    }

    @Test
    void numbersForANumericFeatureMayComeAsText() {
        Fixtures.Model model = Fixtures.model("gbm_regression");
        double[] x1 = ((Column.Float64) model.inputs().column("x1")).values();
        String[] text = new String[x1.length];
        for (int i = 0; i < x1.length; i++) {
            text[i] = Double.isNaN(x1[i]) ? null : Double.toString(x1[i]);
        }
        assertOutputs(model, MojoRunner.load(model.payload()).score(
                replace(model.inputs(), new Column.Text("x1", text))), TOLERANCE);
    }

    static ColumnBlock replace(ColumnBlock block, Column column) {
        List<Column> columns = new ArrayList<>();
        for (Column c : block.columns()) {
            columns.add(c.name().equals(column.name()) ? column : c);
        }
        return new ColumnBlock(block.rows(), columns);
    }
}
