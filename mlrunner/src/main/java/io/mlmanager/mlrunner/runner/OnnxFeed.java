package io.mlmanager.mlrunner.runner;

import ai.onnxruntime.NodeInfo;
import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.TensorInfo;
import io.mlmanager.mlrunner.block.Column;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.DoubleBuffer;
import java.nio.FloatBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * One ONNX input and the features it holds, side by side ({@code [N, indices.length]}).
 *
 * @param name the ONNX input's name
 * @param indices the positions of its features among the model inputs
 * @param type its element type: FLOAT, DOUBLE or STRING
 */
record OnnxFeed(String name, int[] indices, OnnxJavaType type) {

    /**
     * The feeds of a session: one input per feature when every ONNX input is named like a
     * feature, else a single input holding all of them.
     */
    static List<OnnxFeed> plan(Map<String, NodeInfo> sessionInputs, List<String> features) {
        for (NodeInfo input : sessionInputs.values()) {
            OnnxJavaType type = typeOf(input);
            if (type != OnnxJavaType.FLOAT && type != OnnxJavaType.DOUBLE && type != OnnxJavaType.STRING) {
                throw new IllegalArgumentException("ONNX input " + input.getName() + " has unsupported type "
                        + input.getInfo() + " (float, double and string tensors are supported)");
            }
        }
        List<OnnxFeed> feeds = new ArrayList<>();
        if (features.containsAll(sessionInputs.keySet())) {
            for (NodeInfo input : sessionInputs.values()) {
                feeds.add(new OnnxFeed(input.getName(), new int[] {features.indexOf(input.getName())},
                        typeOf(input)));
            }
        } else if (sessionInputs.size() == 1) {
            NodeInfo only = sessionInputs.values().iterator().next();
            int[] all = new int[features.size()];
            for (int i = 0; i < all.length; i++) {
                all[i] = i;
            }
            feeds.add(new OnnxFeed(only.getName(), all, typeOf(only)));
        } else {
            throw new IllegalArgumentException("ONNX model inputs " + sessionInputs.keySet()
                    + " do not match the model's inputs " + features
                    + " (expected one ONNX input per feature, or a single input)");
        }
        return List.copyOf(feeds);
    }

    private static OnnxJavaType typeOf(NodeInfo input) {
        return input.getInfo() instanceof TensorInfo tensor ? tensor.type : OnnxJavaType.UNKNOWN;
    }

    /** The input tensor for {@code rows} rows of the block's columns (indexed like the model inputs). */
    OnnxTensor tensor(OrtEnvironment environment, Column[] columns, List<InputColumn> inputs, int rows)
            throws OrtException {
        int width = indices.length;
        long[] shape = {rows, width};
        switch (type) {
            case STRING: {
                String[] data = new String[rows * width];
                for (int j = 0; j < width; j++) {
                    String[] texts = InputValues.pythonTexts(columns[indices[j]]);
                    for (int row = 0; row < rows; row++) {
                        data[row * width + j] = texts[row];
                    }
                }
                return OnnxTensor.createTensor(environment, data, shape);
            }
            case DOUBLE: {
                DoubleBuffer data = direct(8L * rows * width).asDoubleBuffer();
                for (int j = 0; j < width; j++) {
                    double[] values = InputValues.numbers(columns[indices[j]], inputs.get(indices[j]).name());
                    for (int row = 0; row < rows; row++) {
                        data.put(row * width + j, values[row]);
                    }
                }
                return OnnxTensor.createTensor(environment, data, shape);
            }
            default: {
                FloatBuffer data = direct(4L * rows * width).asFloatBuffer();
                for (int j = 0; j < width; j++) {
                    double[] values = InputValues.numbers(columns[indices[j]], inputs.get(indices[j]).name());
                    for (int row = 0; row < rows; row++) {
                        data.put(row * width + j, (float) values[row]);
                    }
                }
                return OnnxTensor.createTensor(environment, data, shape);
            }
        }
    }

    private static ByteBuffer direct(long bytes) {
        if (bytes > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("batch too large for one ONNX tensor: " + bytes + " bytes");
        }
        return ByteBuffer.allocateDirect((int) bytes).order(ByteOrder.nativeOrder());
    }
}
