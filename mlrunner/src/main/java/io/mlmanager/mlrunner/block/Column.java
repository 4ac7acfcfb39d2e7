package io.mlmanager.mlrunner.block;

import java.util.Objects;

/**
 * One named column of a {@link ColumnBlock}: float64, text or int64 values, one per row.
 *
 * <p>The arrays are shared, not copied: a column is a view over its values.
 */
public sealed interface Column permits Column.Float64, Column.Text, Column.Int64 {

    /** The column's name. */
    String name();

    /** The column's element type. */
    ColumnType type();

    /** The number of values (rows). */
    int size();

    /** Doubles, NaN meaning missing. */
    record Float64(String name, double[] values) implements Column {
        public Float64 {
            Objects.requireNonNull(name, "column name");
            Objects.requireNonNull(values, "column values");
        }

        @Override
        public ColumnType type() {
            return ColumnType.FLOAT64;
        }

        @Override
        public int size() {
            return values.length;
        }
    }

    /** Text, {@code null} meaning missing. */
    record Text(String name, String[] values) implements Column {
        public Text {
            Objects.requireNonNull(name, "column name");
            Objects.requireNonNull(values, "column values");
        }

        @Override
        public ColumnType type() {
            return ColumnType.TEXT;
        }

        @Override
        public int size() {
            return values.length;
        }
    }

    /** 64-bit integers, never missing. */
    record Int64(String name, long[] values) implements Column {
        public Int64 {
            Objects.requireNonNull(name, "column name");
            Objects.requireNonNull(values, "column values");
        }

        @Override
        public ColumnType type() {
            return ColumnType.INT64;
        }

        @Override
        public int size() {
            return values.length;
        }
    }
}
