package io.mlmanager.mlrunner.runner;

import java.util.Locale;

/** What a model predicts, which decides its output columns. */
public enum ModelKind {
    /** A label per row, plus one probability per class. */
    CLASSIFICATION,
    /** One number per row. */
    REGRESSION,
    /** A cluster index per row. */
    CLUSTERING;

    /** The lower-case name used in JSON ({@code classification}...). */
    public String label() {
        return name().toLowerCase(Locale.ROOT);
    }

    /** The kind named {@code text}, case-insensitively. */
    public static ModelKind parse(String text) {
        if (text != null) {
            for (ModelKind kind : values()) {
                if (kind.name().equalsIgnoreCase(text.trim())) {
                    return kind;
                }
            }
        }
        throw new IllegalArgumentException("unknown model kind " + text
                + " (expected classification, regression or clustering)");
    }
}
