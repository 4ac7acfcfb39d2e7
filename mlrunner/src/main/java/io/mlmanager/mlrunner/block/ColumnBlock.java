package io.mlmanager.mlrunner.block;

import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * A batch of rows stored column by column: the unit a runner scores and the gateway moves.
 *
 * <p>{@link #fromBytes(byte[])} and {@link #toBytes()} read and write the packed format
 * (little-endian):
 *
 * <pre>
 * bytes 0-3  magic "MLRB"
 * byte  4    version = 1
 * int32      nrows
 * int32      ncols
 * per column:
 *   byte     type: 1 = float64, 2 = utf8 text, 3 = int64
 *   int32    name length in bytes, then the UTF-8 name
 *   data     float64: nrows doubles (NaN = missing); int64: nrows longs;
 *            text: nrows int32 byte lengths (-1 = null), then the UTF-8 bytes concatenated
 * </pre>
 */
public final class ColumnBlock {
    private final int rows;
    private final List<Column> columns;

    /**
     * A block of {@code rows} rows.
     *
     * @throws IllegalArgumentException if a column does not hold exactly {@code rows} values
     */
    public ColumnBlock(int rows, List<Column> columns) {
        if (rows < 0) {
            throw new IllegalArgumentException("a block cannot have " + rows + " rows");
        }
        for (Column column : columns) {
            if (column.size() != rows) {
                throw new IllegalArgumentException(
                        "column " + column.name() + " has " + column.size()
                                + " values, the block has " + rows + " rows");
            }
        }
        this.rows = rows;
        this.columns = List.copyOf(columns);
    }

    /** A block of these columns, its row count taken from the first (0 when there is none). */
    public static ColumnBlock of(Column... columns) {
        return new ColumnBlock(columns.length == 0 ? 0 : columns[0].size(), List.of(columns));
    }

    /** Decodes a packed block; a malformed buffer is an {@link IllegalArgumentException} that says why. */
    public static ColumnBlock fromBytes(byte[] packed) {
        return BlockCodec.decode(packed);
    }

    /** Encodes this block in the packed format. */
    public byte[] toBytes() {
        return BlockCodec.encode(this);
    }

    /** The number of rows. */
    public int rows() {
        return rows;
    }

    /** The columns, in order. */
    public List<Column> columns() {
        return columns;
    }

    /** The column at {@code index}. */
    public Column column(int index) {
        return columns.get(index);
    }

    /** The column named exactly {@code name}, if there is one (the first, if several). */
    public Optional<Column> find(String name) {
        for (Column column : columns) {
            if (column.name().equals(name)) {
                return Optional.of(column);
            }
        }
        return Optional.empty();
    }

    /** The column named exactly {@code name}. */
    public Column column(String name) {
        return find(name).orElseThrow(() -> new IllegalArgumentException(
                "the block has no column " + name + " (it has: " + names() + ")"));
    }

    /** The column names, comma-separated (for messages). */
    public String names() {
        List<String> names = new ArrayList<>(columns.size());
        for (Column column : columns) {
            names.add(column.name());
        }
        return names.isEmpty() ? "no columns" : String.join(", ", names);
    }

    @Override
    public String toString() {
        return "ColumnBlock[" + rows + " rows: " + names() + "]";
    }
}
