package io.mlmanager.mlrunner.serve;

import java.util.Locale;

/**
 * A model input as the model's signature declares it: what a request must send in its column.
 *
 * @param name the column name
 * @param type the values it accepts
 */
public record InputSpec(String name, Type type) {

    /** The signature types, from the representation's SQL types. */
    public enum Type {
        /** A number; null is a missing value (NaN), as MLflow allows in a double column. */
        DOUBLE,
        /** A whole number; never null (MLflow cannot cast a missing value to an integer). */
        INTEGER,
        /** true or false; never null. */
        BOOLEAN,
        /** Text; null is a missing value. */
        TEXT;

        /** The type of a representation's {@code sql_type} (DOUBLE, INTEGER, BIGINT, BOOLEAN, TEXT). */
        static Type ofSql(String sqlType) {
            switch (sqlType.toUpperCase(Locale.ROOT)) {
                case "DOUBLE":
                    return DOUBLE;
                case "INTEGER":
                case "BIGINT":
                    return INTEGER;
                case "BOOLEAN":
                    return BOOLEAN;
                case "TEXT":
                    return TEXT;
                default:
                    throw new IllegalArgumentException("unknown input type " + sqlType);
            }
        }

        /** How a message names the type. */
        String label() {
            switch (this) {
                case DOUBLE:
                    return "a number";
                case INTEGER:
                    return "an integer";
                case BOOLEAN:
                    return "true or false";
                default:
                    return "text";
            }
        }
    }
}
