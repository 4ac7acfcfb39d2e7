package io.mlmanager.mlrunner.block;

/** The element type of a {@link Column}, with its tag in the packed format. */
public enum ColumnType {
    /** IEEE double, NaN is a missing value. */
    FLOAT64(1, "float64"),
    /** UTF-8 text, {@code null} is a missing value. */
    TEXT(2, "text"),
    /** 64-bit integer, never missing. */
    INT64(3, "int64");

    private final int tag;
    private final String label;

    ColumnType(int tag, String label) {
        this.tag = tag;
        this.label = label;
    }

    /** The type byte in the packed format. */
    public int tag() {
        return tag;
    }

    /** The lower-case name used in JSON descriptions ({@code float64}, {@code text}, {@code int64}). */
    public String label() {
        return label;
    }

    /** The type with this packed tag. */
    public static ColumnType fromTag(int tag) {
        for (ColumnType type : values()) {
            if (type.tag == tag) {
                return type;
            }
        }
        throw new IllegalArgumentException(
                "unknown column type " + tag + " (expected 1 = float64, 2 = text, 3 = int64)");
    }
}
