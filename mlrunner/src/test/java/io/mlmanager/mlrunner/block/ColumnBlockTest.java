package io.mlmanager.mlrunner.block;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;

class ColumnBlockTest {

    private static ColumnBlock sample() {
        return ColumnBlock.of(
                new Column.Float64("x", new double[] {1.5, Double.NaN, -0.0}),
                new Column.Text("name", new String[] {"réseau", null, ""}),
                new Column.Int64("cluster", new long[] {0, Long.MAX_VALUE, -7}));
    }

    @Test
    void roundTripsEveryColumnType() {
        ColumnBlock block = sample();
        ColumnBlock back = ColumnBlock.fromBytes(block.toBytes());
        assertEquals(3, back.rows());
        assertEquals(List.of("x", "name", "cluster"),
                back.columns().stream().map(Column::name).toList());
        assertArrayEquals(new double[] {1.5, Double.NaN, -0.0}, ((Column.Float64) back.column("x")).values());
        assertArrayEquals(new String[] {"réseau", null, ""}, ((Column.Text) back.column("name")).values());
        assertArrayEquals(new long[] {0, Long.MAX_VALUE, -7}, ((Column.Int64) back.column("cluster")).values());
        assertArrayEquals(block.toBytes(), back.toBytes());
    }

    @Test
    void writesTheDocumentedLayout() {
        ColumnBlock block = ColumnBlock.of(
                new Column.Float64("a", new double[] {1.0}),
                new Column.Text("é", new String[] {null}));
        // "MLRB", version 1, 1 row, 2 columns; float64 "a" 1.0; text "é" (2 bytes) length -1.
        String expected = "4d4c524201" + "01000000" + "02000000"
                + "01" + "01000000" + "61" + "000000000000f03f"
                + "02" + "02000000" + "c3a9" + "ffffffff";
        assertEquals(expected, HexFormat.of().formatHex(block.toBytes()));
    }

    @Test
    void anEmptyBlockRoundTrips() {
        ColumnBlock back = ColumnBlock.fromBytes(new ColumnBlock(0, List.of()).toBytes());
        assertEquals(0, back.rows());
        assertEquals(0, back.columns().size());
        ColumnBlock noRows = ColumnBlock.fromBytes(ColumnBlock.of(new Column.Text("t", new String[0])).toBytes());
        assertEquals(0, noRows.rows());
        assertEquals("t", noRows.column(0).name());
    }

    @Test
    void rejectsMalformedBuffers() {
        byte[] good = sample().toBytes();
        assertMessage("packed block is null", null);
        assertMessage("shorter than the 13-byte header", Arrays.copyOf(good, 12));
        byte[] magic = good.clone();
        magic[0] = 'X';
        assertMessage("magic bytes", magic);
        byte[] version = good.clone();
        version[4] = 2;
        assertMessage("version 2", version);
        assertMessage("negative size: -1 rows", header(-1, 0));
        assertMessage("negative size: 0 rows, -3 columns", header(0, -3));
        assertMessage("truncated: the header of column 0", header(1, 1));
        for (int cut = 13; cut < good.length; cut++) {
            assertMessage("truncated", Arrays.copyOf(good, cut));
        }
        byte[] trailing = Arrays.copyOf(good, good.length + 2);
        assertMessage("2 trailing bytes", trailing);
    }

    @Test
    void rejectsBadColumnHeaders() {
        ByteBuffer type = header(1, 1, 6).put((byte) 9).putInt(0);
        assertMessage("column 0: unknown column type 9", type.array());
        ByteBuffer name = header(1, 1, 5).put((byte) 1).putInt(-5);
        assertMessage("negative name length -5", name.array());
        ByteBuffer longName = header(1, 1, 5).put((byte) 1).putInt(1000);
        assertMessage("the name of column 0 needs 1000 bytes", longName.array());
        ByteBuffer text = header(1, 1, 5 + 1 + 4).put((byte) 2).putInt(1).put((byte) 't').putInt(-2);
        assertMessage("row 0 has a negative length -2", text.array());
        ByteBuffer hugeRows = header(Integer.MAX_VALUE, 1, 5 + 1).put((byte) 1).putInt(1).put((byte) 'x');
        assertMessage("the values of column x needs", hugeRows.array());
    }

    @Test
    void columnsMustHaveTheBlocksLength() {
        IllegalArgumentException error = assertThrows(IllegalArgumentException.class, () -> new ColumnBlock(2,
                List.of(new Column.Float64("x", new double[] {1}))));
        assertTrue(error.getMessage().contains("column x has 1 values, the block has 2 rows"));
    }

    @Test
    void missingColumnsAreNamed() {
        IllegalArgumentException error = assertThrows(IllegalArgumentException.class, () -> sample().column("y"));
        assertEquals("the block has no column y (it has: x, name, cluster)", error.getMessage());
    }

    @Test
    void largeBlocksAreFast() {
        int rows = 100_000;
        Random random = new Random(1);
        List<Column> columns = new ArrayList<>();
        for (int c = 0; c < 20; c++) {
            double[] values = new double[rows];
            for (int r = 0; r < rows; r++) {
                values[r] = random.nextDouble();
            }
            columns.add(new Column.Float64("c" + c, values));
        }
        ColumnBlock block = new ColumnBlock(rows, columns);
        long best = Long.MAX_VALUE;
        for (int i = 0; i < 5; i++) {
            long start = System.nanoTime();
            byte[] bytes = block.toBytes();
            ColumnBlock back = ColumnBlock.fromBytes(bytes);
            best = Math.min(best, System.nanoTime() - start);
            assertEquals(rows, back.rows());
        }
        // 16 MB each way: a few milliseconds when warm; the bound only catches per-value boxing.
        assertTrue(best < 500_000_000L, "encode+decode of 100k x 20 took " + best / 1_000_000 + " ms");
    }

    @Test
    void textWithMultiByteCharactersRoundTrips() {
        String[] values = {"日本語", "emoji \uD83D\uDE00", "a,b\nc", null};
        ColumnBlock back = ColumnBlock.fromBytes(ColumnBlock.of(new Column.Text("t", values)).toBytes());
        assertArrayEquals(values, ((Column.Text) back.column(0)).values());
        assertEquals("日本語".getBytes(StandardCharsets.UTF_8).length, 9);
    }

    private static ByteBuffer header(int rows, int columns, int extra) {
        return ByteBuffer.allocate(13 + extra).order(ByteOrder.LITTLE_ENDIAN)
                .put(new byte[] {'M', 'L', 'R', 'B', 1}).putInt(rows).putInt(columns);
    }

    private static byte[] header(int rows, int columns) {
        return header(rows, columns, 0).array();
    }

    private static void assertMessage(String part, byte[] packed) {
        IllegalArgumentException error = assertThrows(IllegalArgumentException.class,
                () -> ColumnBlock.fromBytes(packed));
        assertTrue(error.getMessage().contains(part), "expected '" + part + "' in: " + error.getMessage());
    }
}
