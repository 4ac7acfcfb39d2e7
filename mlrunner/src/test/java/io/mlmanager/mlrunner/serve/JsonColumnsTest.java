package io.mlmanager.mlrunner.serve;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;

import io.mlmanager.mlrunner.block.Column;
import io.mlmanager.mlrunner.block.ColumnBlock;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * The fast JSON path: the numbers it reads are the doubles {@code Double.parseDouble} reads from
 * the same text (as the general reader's Gson does), in every way clients write numbers; and every
 * request outside its shapes is left to the general reader ({@code null}), which words the error.
 */
class JsonColumnsTest {
    private static final List<InputSpec> INPUTS = List.of(
            new InputSpec("x", InputSpec.Type.DOUBLE), new InputSpec("n", InputSpec.Type.INTEGER),
            new InputSpec("flag", InputSpec.Type.BOOLEAN), new InputSpec("city", InputSpec.Type.TEXT));
    private final JsonColumns reader = new JsonColumns(INPUTS);

    private ColumnBlock read(String json) {
        return reader.read(json.getBytes(StandardCharsets.UTF_8));
    }

    /** A double written as pandas, Python's repr, Java, C's %g and by hand write them. */
    private static String written(double value, int style) {
        switch (style) {
            case 0:
                return String.format(Locale.ROOT, "%.10f", value);
            case 1:
                return Double.toString(value);
            case 2:
                return String.format(Locale.ROOT, "%.17g", value).replace("e+", "e");
            case 3:
                return String.format(Locale.ROOT, "%.3E", value);
            default:
                return new java.math.BigDecimal(value).toPlainString();
        }
    }

    @Test
    void numbersAreTheDoublesParseDoubleReads() {
        Random random = new Random(13);
        List<String> texts = new ArrayList<>(List.of("0", "-0", "0.0", "-0.0", "1e22", "1e23", "9007199254740993",
                "123456789012345678901234", "0.1", "2.2250738585072014E-308", "4.9e-324", "1.7976931348623157e308",
                "1e400", "-1e-400", "0.000000000000000000000000001", "123.456e-5", "1E+2"));
        for (int i = 0; i < 3000; i++) {
            double value = switch (i % 3) {
                case 0 -> random.nextGaussian();
                case 1 -> random.nextGaussian() * Math.pow(10, random.nextInt(40) - 20);
                default -> Double.longBitsToDouble(random.nextLong());
            };
            if (Double.isFinite(value)) {
                texts.add(written(value, i % 5));
            }
        }
        StringBuilder json = new StringBuilder("{\"dataframe_split\": {\"columns\": [\"x\", \"n\", \"flag\", \"city\"],"
                + " \"data\": [");
        for (int i = 0; i < texts.size(); i++) {
            json.append(i > 0 ? ", " : "").append('[').append(texts.get(i)).append(", 1, true, \"a\"]");
        }
        ColumnBlock block = read(json.append("]}}").toString());
        assertNotNull(block);
        double[] values = ((Column.Float64) block.columns().get(0)).values();
        assertEquals(texts.size(), values.length);
        for (int i = 0; i < values.length; i++) {
            assertEquals(Double.doubleToLongBits(Double.parseDouble(texts.get(i))), Double.doubleToLongBits(values[i]),
                    texts.get(i));
        }
    }

    @Test
    void splitAndRecordsGiveTheInputsColumns() {
        String split = "{\"params\": {\"k\": [1, {\"a\": \"b\\\"\\u00e9\"}, null]}, \"dataframe_split\": {\"index\": [0, 1],"
                + " \"columns\": [\"city\", \"extra\", \"flag\", \"n\", \"x\"],"
                + " \"data\": [[\"Paris\", [1, 2], true, 3, null], [null, \"x\", false, -4.0, 2.5]]}}";
        String records = "{\"dataframe_records\": [{\"x\": null, \"n\": 3, \"flag\": true, \"city\": \"Paris\","
                + " \"extra\": {}}, {\"city\": null, \"flag\": false, \"n\": -4.0, \"x\": 2.5}]}";
        for (String json : List.of(split, records)) {
            ColumnBlock block = read(json);
            assertNotNull(block, json);
            assertEquals("x, n, flag, city", block.names());
            assertArrayEquals(new double[] {Double.NaN, 2.5}, ((Column.Float64) block.columns().get(0)).values());
            assertArrayEquals(new double[] {3, -4}, ((Column.Float64) block.columns().get(1)).values());
            assertArrayEquals(new double[] {1, 0}, ((Column.Float64) block.columns().get(2)).values());
            assertArrayEquals(new String[] {"Paris", null}, ((Column.Text) block.columns().get(3)).values());
        }
    }

    @Test
    void unusualRequestsAreLeftToTheGeneralReader() {
        String columns = "\"columns\": [\"x\", \"n\", \"flag\", \"city\"]";
        List<String> unusual = List.of(
                "{\"dataframe_split\": {" + columns + ", \"data\": [[1, 2.5, true, \"a\"]]}}", // a fraction for an integer
                "{\"dataframe_split\": {" + columns + ", \"data\": [[1, null, true, \"a\"]]}}", // null for an integer
                "{\"dataframe_split\": {" + columns + ", \"data\": [[1, 2, 1, \"a\"]]}}", // a number for a boolean
                "{\"dataframe_split\": {" + columns + ", \"data\": [[1, 2, true, 7]]}}", // a number for text
                "{\"dataframe_split\": {" + columns + ", \"data\": [[\"1\", 2, true, \"a\"]]}}", // text for a number
                "{\"dataframe_split\": {" + columns + ", \"data\": [[1, 2, true, \"a\\n\"]]}}", // an escape
                "{\"dataframe_split\": {" + columns + ", \"data\": [[1, 2, true, \"caf\u00e9\"]]}}", // not ASCII
                "{\"dataframe_split\": {" + columns + ", \"data\": [[01, 2, true, \"a\"]]}}", // not strict JSON
                "{\"dataframe_split\": {" + columns + ", \"data\": [[1., 2, true, \"a\"]]}}",
                "{\"dataframe_split\": {" + columns + ", \"data\": [[NaN, 2, true, \"a\"]]}}",
                "{\"dataframe_split\": {" + columns + ", \"data\": [[1, 2, true]]}}", // a short row
                "{\"dataframe_split\": {" + columns + ", \"data\": [[1, 2, true, \"a\", 5]]}}", // a long row
                "{\"dataframe_split\": {" + columns + ", \"data\": []}}", // no rows
                "{\"dataframe_split\": {\"data\": [[1, 2, true, \"a\"]], " + columns + "}}", // data first
                "{\"dataframe_split\": {\"columns\": [\"x\", \"n\", \"flag\"], \"data\": [[1, 2, true]]}}", // missing
                "{\"dataframe_split\": {\"columns\": [\"x\", \"x\", \"n\", \"flag\", \"city\"], \"data\": [[1, 1, 2, true,"
                        + " \"a\"]]}}", // a column twice
                "{\"dataframe_split\": {" + columns + ", \"data\": [[1, 2, true, \"a\"]], \"other\": 1}}",
                "{\"dataframe_split\": {" + columns + ", \"data\": [[1, 2, true, \"a\"]]}} x", // trailing text
                "{\"dataframe_split\": {" + columns + ", \"data\": [[1, 2, true, \"a\"]]}, \"inputs\": {}}",
                "{\"dataframe_split\": {" + columns + ", \"data\": [[1, 2, true, \"a\"]]}, \"params\": {\"a\": \"\\x\"}}",
                "{\"dataframe_records\": [{\"x\": 1, \"n\": 2, \"flag\": true}]}", // a record lacks an input
                "{\"dataframe_records\": [{\"x\": 1, \"x\": 1, \"n\": 2, \"flag\": true, \"city\": \"a\"}]}",
                "{\"instances\": [{\"x\": 1, \"n\": 2, \"flag\": true, \"city\": \"a\"}]}",
                "{\"dataframe_records\": [{\"x\": 1, \"n\": 2, \"flag\": true, \"city\": \"a\"}]",
                "[]", "");
        for (String json : unusual) {
            assertNull(read(json), json);
        }
    }
}
