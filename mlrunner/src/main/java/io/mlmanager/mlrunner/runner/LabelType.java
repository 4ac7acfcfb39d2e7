package io.mlmanager.mlrunner.runner;

/**
 * The type of a classifier's labels in the model's own language, which decides how an HTTP
 * answer writes them: MLflow answers {@code 2} for an integer class, {@code true} for a boolean
 * one and {@code "setosa"} for a string one.
 */
public enum LabelType {
    TEXT,
    INTEGER,
    BOOLEAN,
    FLOAT
}
