package io.mlmanager.mlrunner.runner;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import java.lang.reflect.Array;
import java.nio.DoubleBuffer;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.nio.LongBuffer;

/** Reading onnxruntime's output tensors into flat Java arrays, as the Python scorer reads them. */
final class OnnxOutputs {
    private OnnxOutputs() {}

    /** Output {@code index} of a result, which must be a tensor (not a zipmap's sequence of maps). */
    static OnnxTensor tensor(OrtSession.Result result, int index) {
        OnnxValue value = result.get(index);
        if (!(value instanceof OnnxTensor tensor)) {
            throw new IllegalArgumentException("ONNX output " + index + " is a " + value.getType()
                    + ", not a tensor: convert classifiers with zipmap disabled");
        }
        return tensor;
    }

    /**
     * Labels as text: integers as digits ({@code 0}/{@code 1} as {@code False}/{@code True}
     * when the classes are those booleans, as skl2onnx encodes them), booleans as
     * {@code True}/{@code False}, strings as they are, floats as Python writes them.
     */
    static String[] labels(OnnxTensor tensor, int rows, boolean booleanClasses) throws OrtException {
        String[] labels = new String[rows];
        switch (tensor.getInfo().type) {
            case INT64: {
                LongBuffer values = tensor.getLongBuffer();
                check(tensor, values.remaining(), rows);
                for (int row = 0; row < rows; row++) {
                    long v = values.get(row);
                    labels[row] = booleanClasses ? pythonBool(v != 0) : Long.toString(v);
                }
                return labels;
            }
            case INT32: {
                IntBuffer values = tensor.getIntBuffer();
                check(tensor, values.remaining(), rows);
                for (int row = 0; row < rows; row++) {
                    int v = values.get(row);
                    labels[row] = booleanClasses ? pythonBool(v != 0) : Integer.toString(v);
                }
                return labels;
            }
            case STRING:
            case BOOL: {
                Object[] flat = flatten(tensor.getValue(), rows, tensor);
                for (int row = 0; row < rows; row++) {
                    Object v = flat[row];
                    labels[row] = v instanceof Boolean b ? pythonBool(b) : (String) v;
                }
                return labels;
            }
            case FLOAT:
            case DOUBLE: {
                double[] values = values(tensor, rows);
                for (int row = 0; row < rows; row++) {
                    labels[row] = Double.isNaN(values[row]) ? null : NumberText.python(values[row]);
                }
                return labels;
            }
            default:
                throw new IllegalArgumentException("ONNX label output has unsupported type " + tensor.getInfo());
        }
    }

    /** A {@code [rows, C]} float or double tensor as C arrays of rows. */
    static double[][] matrix(OnnxTensor tensor, int rows) {
        double[] flat = numbers(tensor);
        if (rows == 0 || flat.length % rows != 0) {
            throw new IllegalArgumentException("ONNX probability output holds " + flat.length
                    + " values for " + rows + " rows");
        }
        int width = flat.length / rows;
        double[][] columns = new double[width][rows];
        for (int row = 0; row < rows; row++) {
            for (int c = 0; c < width; c++) {
                columns[c][row] = flat[row * width + c];
            }
        }
        return columns;
    }

    /** One number per row (a regressor's output, flattened). */
    static double[] values(OnnxTensor tensor, int rows) {
        double[] values = numbers(tensor);
        check(tensor, values.length, rows);
        return values;
    }

    /** One cluster index per row. */
    static long[] clusters(OnnxTensor tensor, int rows) {
        long[] clusters = new long[rows];
        switch (tensor.getInfo().type) {
            case INT64: {
                LongBuffer values = tensor.getLongBuffer();
                check(tensor, values.remaining(), rows);
                values.get(clusters);
                return clusters;
            }
            case INT32: {
                IntBuffer values = tensor.getIntBuffer();
                check(tensor, values.remaining(), rows);
                for (int row = 0; row < rows; row++) {
                    clusters[row] = values.get(row);
                }
                return clusters;
            }
            default: {
                double[] values = values(tensor, rows);
                for (int row = 0; row < rows; row++) {
                    if (!Double.isFinite(values[row])) {
                        throw new IllegalArgumentException("ONNX cluster output holds " + values[row]
                                + " at row " + row + ", not a cluster index");
                    }
                    clusters[row] = (long) values[row];
                }
                return clusters;
            }
        }
    }

    private static double[] numbers(OnnxTensor tensor) {
        switch (tensor.getInfo().type) {
            case FLOAT: {
                FloatBuffer values = tensor.getFloatBuffer();
                double[] out = new double[values.remaining()];
                for (int i = 0; i < out.length; i++) {
                    out[i] = values.get(i);
                }
                return out;
            }
            case DOUBLE: {
                DoubleBuffer values = tensor.getDoubleBuffer();
                double[] out = new double[values.remaining()];
                values.get(out);
                return out;
            }
            case INT64: {
                LongBuffer values = tensor.getLongBuffer();
                double[] out = new double[values.remaining()];
                for (int i = 0; i < out.length; i++) {
                    out[i] = values.get(i);
                }
                return out;
            }
            default:
                throw new IllegalArgumentException("ONNX output has type " + tensor.getInfo()
                        + " where numbers were expected");
        }
    }

    private static Object[] flatten(Object value, int rows, OnnxTensor tensor) {
        Object[] flat = new Object[rows];
        int[] next = {0};
        collect(value, flat, next, tensor);
        check(tensor, next[0], rows);
        return flat;
    }

    private static void collect(Object value, Object[] flat, int[] next, OnnxTensor tensor) {
        if (value != null && value.getClass().isArray()) {
            int length = Array.getLength(value);
            for (int i = 0; i < length; i++) {
                collect(Array.get(value, i), flat, next, tensor);
            }
        } else {
            if (next[0] >= flat.length) {
                check(tensor, next[0] + 1, flat.length);
            }
            flat[next[0]++] = value;
        }
    }

    private static void check(OnnxTensor tensor, int values, int rows) {
        if (values != rows) {
            throw new IllegalArgumentException("ONNX output " + tensor.getInfo() + " holds " + values
                    + " values for " + rows + " rows (one per row expected)");
        }
    }

    private static String pythonBool(boolean value) {
        return value ? "True" : "False";
    }
}
