package io.mlmanager.mlrunner.runner;

import java.util.Objects;

/**
 * A model input: its name and whether the model reads it as a number or as text
 * (a categorical level, or a string tensor).
 */
public record InputColumn(String name, boolean numeric) {
    public InputColumn {
        Objects.requireNonNull(name, "input name");
    }

    /** {@code numeric} or {@code text}, as in the JSON description. */
    public String typeLabel() {
        return numeric ? "numeric" : "text";
    }
}
