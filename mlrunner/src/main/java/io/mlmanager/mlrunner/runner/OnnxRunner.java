package io.mlmanager.mlrunner.runner;

import ai.onnxruntime.NodeInfo;
import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import ai.onnxruntime.TensorInfo;
import io.mlmanager.mlrunner.block.Column;
import io.mlmanager.mlrunner.block.ColumnBlock;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * An ONNX model on onnxruntime (one intra-op and one inter-op thread), giving the same
 * outputs as the Python scorer ({@code shared/scoring/runtime.py}, {@code OnnxScorer}).
 *
 * <p>Feeds: either one ONNX input per feature, matched by name, each {@code [N, 1]}, or a
 * single input holding all features side by side, {@code [N, F]}; element type float, double
 * or string (a missing text is the empty string). Outputs: a classifier's first output holds
 * the labels and its second, when there is one, the {@code [N, C]} probabilities (skl2onnx
 * with zipmap disabled); a regressor's last output holds the values; a clustering model's
 * first output the cluster indices.
 */
public final class OnnxRunner implements Runner {
    private final OrtSession session;
    private final OrtEnvironment environment;
    private final OnnxMetadata metadata;
    private final List<OnnxFeed> feeds;
    private final List<InputColumn> inputs;
    private final List<OutputColumn> outputs;
    private final boolean booleanClasses;
    private final LabelType labelType;

    private OnnxRunner(OrtEnvironment environment, OrtSession session, OnnxMetadata metadata)
            throws OrtException {
        this.environment = environment;
        this.session = session;
        this.metadata = metadata;
        this.feeds = OnnxFeed.plan(session.getInputInfo(), metadata.inputs());
        this.inputs = inputColumns(metadata.inputs(), feeds);
        boolean probabilities = metadata.kind() == ModelKind.CLASSIFICATION && session.getNumOutputs() > 1;
        if (probabilities) {
            checkClasses(session, metadata.classes());
        }
        this.outputs = OutputColumn.of(metadata.kind(), metadata.classes(), probabilities);
        this.booleanClasses = metadata.classes().equals(List.of("False", "True"));
        this.labelType = labelTypeOf(session, booleanClasses);
    }

    private static LabelType labelTypeOf(OrtSession session, boolean booleanClasses) throws OrtException {
        NodeInfo first = session.getOutputInfo().values().iterator().next();
        if (!(first.getInfo() instanceof TensorInfo tensor)) {
            return LabelType.TEXT;
        }
        switch (tensor.type) {
            case INT64:
            case INT32:
                return booleanClasses ? LabelType.BOOLEAN : LabelType.INTEGER;
            case BOOL:
                return LabelType.BOOLEAN;
            case FLOAT:
            case DOUBLE:
                return LabelType.FLOAT;
            default:
                return LabelType.TEXT;
        }
    }

    /**
     * Loads an ONNX model from its bytes.
     *
     * @throws IllegalArgumentException if onnxruntime refuses the model or it does not fit the metadata
     */
    public static OnnxRunner load(byte[] model, OnnxMetadata metadata) {
        if (model == null || model.length == 0) {
            throw new IllegalArgumentException("the ONNX payload is empty");
        }
        OrtEnvironment environment = environment();
        OrtSession session;
        try (OrtSession.SessionOptions options = new OrtSession.SessionOptions()) {
            options.setIntraOpNumThreads(1);
            options.setInterOpNumThreads(1);
            session = environment.createSession(model, options);
        } catch (OrtException e) {
            throw new IllegalArgumentException("onnxruntime cannot load the model: " + e.getMessage(), e);
        }
        try {
            return new OnnxRunner(environment, session, metadata);
        } catch (OrtException e) {
            closeQuietly(session);
            throw new IllegalArgumentException("cannot read the ONNX model's signature: " + e.getMessage(), e);
        } catch (RuntimeException e) {
            closeQuietly(session);
            throw e;
        }
    }

    private static OrtEnvironment environment() {
        try {
            return OrtEnvironment.getEnvironment();
        } catch (LinkageError e) {
            throw new IllegalStateException(
                    "onnxruntime's native library cannot be loaded on this machine: " + e, e);
        }
    }

    private static List<InputColumn> inputColumns(List<String> names, List<OnnxFeed> feeds) {
        boolean[] text = new boolean[names.size()];
        for (OnnxFeed feed : feeds) {
            for (int index : feed.indices()) {
                text[index] = feed.type() == OnnxJavaType.STRING;
            }
        }
        List<InputColumn> columns = new ArrayList<>();
        for (int i = 0; i < names.size(); i++) {
            columns.add(new InputColumn(names.get(i), !text[i]));
        }
        return List.copyOf(columns);
    }

    private static void checkClasses(OrtSession session, List<String> classes) throws OrtException {
        NodeInfo second = new ArrayList<>(session.getOutputInfo().values()).get(1);
        if (!(second.getInfo() instanceof TensorInfo)) {
            throw new IllegalArgumentException("ONNX output " + second.getName()
                    + " is not a tensor: convert classifiers with zipmap disabled");
        }
        long[] shape = ((TensorInfo) second.getInfo()).getShape();
        if (classes.isEmpty()) {
            throw new IllegalArgumentException("the ONNX metadata lists no classes for a classifier"
                    + " whose output " + second.getName() + " gives probabilities");
        }
        if (shape.length == 2 && shape[1] > 0 && shape[1] != classes.size()) {
            throw new IllegalArgumentException("ONNX output " + second.getName() + " gives " + shape[1]
                    + " probabilities per row, the metadata lists " + classes.size() + " classes " + classes);
        }
    }

    @Override
    public ModelKind kind() {
        return metadata.kind();
    }

    @Override
    public List<InputColumn> inputs() {
        return inputs;
    }

    @Override
    public List<String> classes() {
        return metadata.classes();
    }

    @Override
    public List<OutputColumn> outputs() {
        return outputs;
    }

    @Override
    public LabelType labelType() {
        return labelType;
    }

    @Override
    public String format() {
        return "onnx";
    }

    @Override
    public ColumnBlock score(ColumnBlock block) {
        Column[] columns = InputValues.columns(block, inputs);
        int rows = block.rows();
        if (rows == 0) {
            return Predictions.empty(outputs);
        }
        Map<String, OnnxTensor> tensors = new LinkedHashMap<>();
        try {
            for (OnnxFeed feed : feeds) {
                tensors.put(feed.name(), feed.tensor(environment, columns, inputs, rows));
            }
            try (OrtSession.Result result = session.run(tensors)) {
                return predictions(result, rows);
            }
        } catch (OrtException e) {
            throw new IllegalArgumentException("onnxruntime could not score the batch: " + e.getMessage(), e);
        } finally {
            tensors.values().forEach(OnnxTensor::close);
        }
    }

    private ColumnBlock predictions(OrtSession.Result result, int rows) throws OrtException {
        switch (metadata.kind()) {
            case CLASSIFICATION: {
                String[] labels = OnnxOutputs.labels(OnnxOutputs.tensor(result, 0), rows, booleanClasses);
                double[][] probabilities = result.size() > 1
                        ? OnnxOutputs.matrix(OnnxOutputs.tensor(result, 1), rows)
                        : null;
                return Predictions.classification(labels, probabilities, metadata.classes());
            }
            case REGRESSION:
                return Predictions.regression(
                        OnnxOutputs.values(OnnxOutputs.tensor(result, result.size() - 1), rows));
            default:
                return Predictions.clustering(OnnxOutputs.clusters(OnnxOutputs.tensor(result, 0), rows));
        }
    }

    @Override
    public void close() {
        closeQuietly(session);
    }

    private static void closeQuietly(OrtSession session) {
        try {
            session.close();
        } catch (OrtException e) {
            System.err.println("mlrunner: closing an ONNX session failed: " + e.getMessage());
        }
    }

    @Override
    public String toString() {
        return "OnnxRunner[" + metadata.kind().label() + ", inputs=" + metadata.inputs() + "]";
    }
}
