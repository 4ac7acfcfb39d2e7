package io.mlmanager.mlrunner.runner;

import static io.mlmanager.mlrunner.Fixtures.assertOutputs;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mlmanager.mlrunner.Fixtures;
import io.mlmanager.mlrunner.block.Column;
import io.mlmanager.mlrunner.block.ColumnBlock;
import io.mlmanager.mlrunner.block.ColumnType;
import java.util.List;
import org.junit.jupiter.api.Test;

/** ONNX scoring against scikit-learn's own predictions (float32 inside the ONNX model). */
class OnnxRunnerTest {
    /** float32 ONNX vs float64 scikit-learn: relative to max(1, |expected|). */
    private static final double TOLERANCE = 1e-4;

    private static Runner load(Fixtures.Model model) {
        return Runners.load("onnx", model.payload(), model.metadataJson());
    }

    @Test
    void classifierOverOneMatrixInputScoresLikeScikitLearn() {
        Fixtures.Model model = Fixtures.model("logreg");
        try (Runner runner = load(model)) {
            assertEquals(ModelKind.CLASSIFICATION, runner.kind());
            assertEquals(List.of("alpha", "beta", "gamma"), runner.classes());
            assertEquals(List.of(
                    new OutputColumn("PREDICTION", ColumnType.TEXT),
                    new OutputColumn("alpha", ColumnType.FLOAT64),
                    new OutputColumn("beta", ColumnType.FLOAT64),
                    new OutputColumn("gamma", ColumnType.FLOAT64)), runner.outputs());
            assertOutputs(model, runner.score(model.inputs()), TOLERANCE);
        }
    }

    @Test
    void regressorOverOneInputPerFeatureWithTextScoresLikeScikitLearn() {
        Fixtures.Model model = Fixtures.model("ridge");
        try (Runner runner = load(model)) {
            assertEquals(List.of(new InputColumn("x1", true), new InputColumn("x2", true),
                    new InputColumn("color", false)), runner.inputs());
            assertEquals(List.of(new OutputColumn("PREDICTION", ColumnType.FLOAT64)), runner.outputs());
            assertOutputs(model, runner.score(model.inputs()), TOLERANCE);
        }
    }

    @Test
    void aNanFeatureGivesANullLabelAndNanProbabilities() {
        Fixtures.Model model = Fixtures.model("logreg");
        try (Runner runner = load(model)) {
            ColumnBlock block = ColumnBlock.of(
                    new Column.Float64("x1", new double[] {0.5, Double.NaN}),
                    new Column.Float64("x2", new double[] {1.0, 1.0}),
                    new Column.Float64("x3", new double[] {0.1, 0.1}));
            ColumnBlock out = runner.score(block);
            String[] labels = ((Column.Text) out.column("PREDICTION")).values();
            assertTrue(labels[0] != null);
            assertNull(labels[1]);
            for (String label : List.of("alpha", "beta", "gamma")) {
                double[] p = ((Column.Float64) out.column(label)).values();
                assertTrue(!Double.isNaN(p[0]) && Double.isNaN(p[1]), label);
            }
        }
    }

    @Test
    void numbersMayComeAsTextOrIntegers() {
        Fixtures.Model model = Fixtures.model("logreg");
        try (Runner runner = load(model)) {
            ColumnBlock numbers = ColumnBlock.of(
                    new Column.Float64("x1", new double[] {1.0}),
                    new Column.Float64("x2", new double[] {2.0}),
                    new Column.Float64("x3", new double[] {0.25}));
            ColumnBlock mixed = ColumnBlock.of(
                    new Column.Int64("x1", new long[] {1}),
                    new Column.Text("x2", new String[] {" 2.0 "}),
                    new Column.Text("x3", new String[] {"0.25"}));
            assertEquals(((Column.Float64) runner.score(numbers).column("beta")).values()[0],
                    ((Column.Float64) runner.score(mixed).column("beta")).values()[0]);
            ColumnBlock bad = ColumnBlock.of(
                    new Column.Float64("x1", new double[] {1.0}),
                    new Column.Text("x2", new String[] {"two"}),
                    new Column.Float64("x3", new double[] {0.25}));
            IllegalArgumentException error = assertThrows(IllegalArgumentException.class, () -> runner.score(bad));
            assertTrue(error.getMessage().contains("input x2 is not numeric"), error.getMessage());
        }
    }

    @Test
    void aNullTextIsTheEmptyStringAndANumberIsItsPythonText() {
        Fixtures.Model model = Fixtures.model("ridge");
        try (Runner runner = load(model)) {
            ColumnBlock nullColor = ColumnBlock.of(
                    new Column.Float64("x1", new double[] {0.3}),
                    new Column.Float64("x2", new double[] {1.1}),
                    new Column.Text("color", new String[] {null}));
            ColumnBlock emptyColor = ColumnBlock.of(
                    new Column.Float64("x1", new double[] {0.3}),
                    new Column.Float64("x2", new double[] {1.1}),
                    new Column.Float64("color", new double[] {Double.NaN}));
            double a = ((Column.Float64) runner.score(nullColor).column(0)).values()[0];
            double b = ((Column.Float64) runner.score(emptyColor).column(0)).values()[0];
            assertEquals(a, b);
            assertTrue(Double.isFinite(a));
        }
    }

    @Test
    void metadataIsChecked() {
        Fixtures.Model model = Fixtures.model("logreg");
        assertMessage("needs metadata JSON", () -> Runners.load("onnx", model.payload(), null));
        assertMessage("not a JSON object", () -> Runners.load("onnx", model.payload(), "[1"));
        assertMessage("lacks \"kind\"", () -> Runners.load("onnx", model.payload(), "{\"inputs\": [\"a\"]}"));
        assertMessage("unknown model kind ranking",
                () -> Runners.load("onnx", model.payload(), "{\"kind\": \"ranking\", \"inputs\": [\"a\"]}"));
        assertMessage("lists no classes", () -> Runners.load("onnx", model.payload(),
                "{\"kind\": \"classification\", \"inputs\": [\"x1\", \"x2\", \"x3\"]}"));
        assertMessage("gives 3 probabilities per row, the metadata lists 2 classes", () -> Runners.load("onnx",
                model.payload(), "{\"kind\": \"classification\", \"inputs\": [\"x1\", \"x2\", \"x3\"],"
                        + " \"classes\": [\"a\", \"b\"]}"));
        assertMessage("onnxruntime cannot load the model",
                () -> Runners.load("onnx", new byte[] {1, 2, 3}, model.metadataJson()));
        assertMessage("unknown model format pmml", () -> Runners.load("pmml", model.payload(), null));
    }

    @Test
    void perFeatureInputsMustMatchTheMetadata() {
        Fixtures.Model model = Fixtures.model("ridge");
        assertMessage("do not match the model's inputs", () -> Runners.load("onnx", model.payload(),
                "{\"kind\": \"regression\", \"inputs\": [\"a\", \"b\", \"c\"]}"));
    }

    @Test
    void aMissingInputIsNamed() {
        Fixtures.Model model = Fixtures.model("ridge");
        try (Runner runner = load(model)) {
            ColumnBlock block = ColumnBlock.of(new Column.Float64("x1", new double[] {1}),
                    new Column.Float64("x2", new double[] {1}));
            assertMessage("lacks model input color", () -> runner.score(block));
        }
    }

    @Test
    void anEmptyBatchGivesAnEmptyBlock() {
        Fixtures.Model model = Fixtures.model("logreg");
        try (Runner runner = load(model)) {
            ColumnBlock none = ColumnBlock.of(new Column.Float64("x1", new double[0]),
                    new Column.Float64("x2", new double[0]), new Column.Float64("x3", new double[0]));
            ColumnBlock out = runner.score(none);
            assertEquals(0, out.rows());
            assertEquals(4, out.columns().size());
        }
    }

    private static void assertMessage(String part, org.junit.jupiter.api.function.Executable call) {
        IllegalArgumentException error = assertThrows(IllegalArgumentException.class, call);
        assertTrue(error.getMessage().contains(part), "expected '" + part + "' in: " + error.getMessage());
    }
}
