package io.mlmanager.mlrunner.block;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/** The packed format of {@link ColumnBlock}: bulk copies through little-endian buffers, no boxing. */
final class BlockCodec {
    static final byte[] MAGIC = {'M', 'L', 'R', 'B'};
    static final int VERSION = 1;
    static final int HEADER_BYTES = 13;

    private BlockCodec() {}

    static ColumnBlock decode(byte[] packed) {
        if (packed == null) {
            throw new IllegalArgumentException("packed block is null");
        }
        if (packed.length < HEADER_BYTES) {
            throw new IllegalArgumentException("packed block is truncated: " + packed.length
                    + " bytes, shorter than the " + HEADER_BYTES + "-byte header");
        }
        for (int i = 0; i < MAGIC.length; i++) {
            if (packed[i] != MAGIC[i]) {
                throw new IllegalArgumentException(
                        "not a packed block: it does not start with the magic bytes \"MLRB\"");
            }
        }
        int version = packed[4] & 0xff;
        if (version != VERSION) {
            throw new IllegalArgumentException("packed block has version " + version
                    + ", this mlrunner reads version " + VERSION);
        }
        ByteBuffer buffer = ByteBuffer.wrap(packed).order(ByteOrder.LITTLE_ENDIAN);
        buffer.position(5);
        int rows = buffer.getInt();
        int width = buffer.getInt();
        if (rows < 0 || width < 0) {
            throw new IllegalArgumentException(
                    "packed block has a negative size: " + rows + " rows, " + width + " columns");
        }
        List<Column> columns = new ArrayList<>(Math.min(width, 1024));
        for (int c = 0; c < width; c++) {
            columns.add(readColumn(buffer, rows, c));
        }
        if (buffer.hasRemaining()) {
            throw new IllegalArgumentException("packed block has " + buffer.remaining()
                    + " trailing bytes after its " + width + " columns");
        }
        return new ColumnBlock(rows, columns);
    }

    private static Column readColumn(ByteBuffer buffer, int rows, int index) {
        need(buffer, 5, "the header of column " + index);
        int tag = buffer.get() & 0xff;
        ColumnType type;
        try {
            type = ColumnType.fromTag(tag);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("column " + index + ": " + e.getMessage(), e);
        }
        int nameLength = buffer.getInt();
        if (nameLength < 0) {
            throw new IllegalArgumentException(
                    "column " + index + " has a negative name length " + nameLength);
        }
        need(buffer, nameLength, "the name of column " + index);
        String name = utf8(buffer, nameLength);
        switch (type) {
            case FLOAT64: {
                need(buffer, 8L * rows, "the values of column " + name);
                double[] values = new double[rows];
                buffer.asDoubleBuffer().get(values);
                skip(buffer, 8 * rows);
                return new Column.Float64(name, values);
            }
            case INT64: {
                need(buffer, 8L * rows, "the values of column " + name);
                long[] values = new long[rows];
                buffer.asLongBuffer().get(values);
                skip(buffer, 8 * rows);
                return new Column.Int64(name, values);
            }
            default:
                return readText(buffer, rows, name);
        }
    }

    private static Column readText(ByteBuffer buffer, int rows, String name) {
        need(buffer, 4L * rows, "the value lengths of column " + name);
        int[] lengths = new int[rows];
        buffer.asIntBuffer().get(lengths);
        skip(buffer, 4 * rows);
        String[] values = new String[rows];
        for (int row = 0; row < rows; row++) {
            int length = lengths[row];
            if (length == -1) {
                continue;
            }
            if (length < -1) {
                throw new IllegalArgumentException("column " + name + " row " + row
                        + " has a negative length " + length + " (only -1, null, is allowed)");
            }
            need(buffer, length, "row " + row + " of column " + name);
            values[row] = utf8(buffer, length);
        }
        return new Column.Text(name, values);
    }

    private static String utf8(ByteBuffer buffer, int length) {
        int start = buffer.position();
        skip(buffer, length);
        return new String(buffer.array(), start, length, StandardCharsets.UTF_8);
    }

    private static void skip(ByteBuffer buffer, int bytes) {
        buffer.position(buffer.position() + bytes);
    }

    private static void need(ByteBuffer buffer, long bytes, String what) {
        if (bytes > buffer.remaining()) {
            throw new IllegalArgumentException("packed block is truncated: " + what + " needs "
                    + bytes + " bytes, " + buffer.remaining() + " are left");
        }
    }

    static byte[] encode(ColumnBlock block) {
        int rows = block.rows();
        List<Column> columns = block.columns();
        byte[][] names = new byte[columns.size()][];
        byte[][][] texts = new byte[columns.size()][][];
        long size = HEADER_BYTES;
        for (int c = 0; c < columns.size(); c++) {
            Column column = columns.get(c);
            names[c] = column.name().getBytes(StandardCharsets.UTF_8);
            size += 5L + names[c].length;
            if (column instanceof Column.Text text) {
                texts[c] = utf8(text.values());
                size += 4L * rows;
                for (byte[] value : texts[c]) {
                    size += value == null ? 0 : value.length;
                }
            } else {
                size += 8L * rows;
            }
        }
        if (size > Integer.MAX_VALUE - 16) {
            throw new IllegalArgumentException(
                    "block too large to pack: " + size + " bytes (" + block + ")");
        }
        ByteBuffer buffer = ByteBuffer.allocate((int) size).order(ByteOrder.LITTLE_ENDIAN);
        buffer.put(MAGIC).put((byte) VERSION).putInt(rows).putInt(columns.size());
        for (int c = 0; c < columns.size(); c++) {
            Column column = columns.get(c);
            buffer.put((byte) column.type().tag()).putInt(names[c].length).put(names[c]);
            if (column instanceof Column.Float64 numbers) {
                buffer.asDoubleBuffer().put(numbers.values());
                skip(buffer, 8 * rows);
            } else if (column instanceof Column.Int64 integers) {
                buffer.asLongBuffer().put(integers.values());
                skip(buffer, 8 * rows);
            } else {
                writeText(buffer, texts[c]);
            }
        }
        return buffer.array();
    }

    private static byte[][] utf8(String[] values) {
        byte[][] bytes = new byte[values.length][];
        for (int i = 0; i < values.length; i++) {
            if (values[i] != null) {
                bytes[i] = values[i].getBytes(StandardCharsets.UTF_8);
            }
        }
        return bytes;
    }

    private static void writeText(ByteBuffer buffer, byte[][] values) {
        for (byte[] value : values) {
            buffer.putInt(value == null ? -1 : value.length);
        }
        for (byte[] value : values) {
            if (value != null) {
                buffer.put(value);
            }
        }
    }
}
