package io.mlmanager.mlrunner.runner;

import java.math.BigDecimal;

/** Numbers written as text, the way each model format expects them. */
public final class NumberText {
    private static final double EXACT_LONG = 9.007199254740992E15; // 2^53

    private NumberText() {}

    /**
     * For an H2O categorical level: integer values without a fraction ({@code 1.0} is
     * {@code "1"}), others as {@link Double#toString(double)}.
     */
    public static String level(double value) {
        if (value == Math.rint(value) && Math.abs(value) < EXACT_LONG) {
            return Long.toString((long) value);
        }
        return Double.toString(value);
    }

    /**
     * Python's {@code str(float)}: what the Python scorer feeds an ONNX string input for a
     * number ({@code 1.0} is {@code "1.0"}, {@code 1e-05}, {@code 1e+16}).
     */
    public static String python(double value) {
        if (Double.isNaN(value)) {
            return "nan";
        }
        if (Double.isInfinite(value)) {
            return value > 0 ? "inf" : "-inf";
        }
        if (value == 0) {
            return 1 / value < 0 ? "-0.0" : "0.0";
        }
        BigDecimal decimal = new BigDecimal(Double.toString(Math.abs(value))).stripTrailingZeros();
        String digits = decimal.unscaledValue().toString();
        int exponent = digits.length() - decimal.scale() - 1;
        String sign = value < 0 ? "-" : "";
        if (exponent >= -4 && exponent < 16) {
            String plain = decimal.toPlainString();
            return sign + (plain.indexOf('.') < 0 ? plain + ".0" : plain);
        }
        String mantissa = digits.length() == 1 ? digits : digits.charAt(0) + "." + digits.substring(1);
        int magnitude = Math.abs(exponent);
        return sign + mantissa + (exponent < 0 ? "e-" : "e+") + (magnitude < 10 ? "0" : "") + magnitude;
    }

    /**
     * Text read as a number like numpy's {@code float64} conversion: {@code null} is NaN,
     * {@code nan}/{@code inf} are accepted in any case.
     *
     * @throws NumberFormatException if the text is not a number
     */
    public static double parse(String text) {
        if (text == null) {
            return Double.NaN;
        }
        String trimmed = text.trim();
        switch (trimmed.toLowerCase(java.util.Locale.ROOT)) {
            case "nan":
            case "+nan":
            case "-nan":
                return Double.NaN;
            case "inf":
            case "+inf":
            case "infinity":
            case "+infinity":
                return Double.POSITIVE_INFINITY;
            case "-inf":
            case "-infinity":
                return Double.NEGATIVE_INFINITY;
            default:
                char last = trimmed.isEmpty() ? ' ' : trimmed.charAt(trimmed.length() - 1);
                if (!Character.isDigit(last) && last != '.') {
                    throw new NumberFormatException("not a number: '" + text + "'");
                }
                return Double.parseDouble(trimmed);
        }
    }
}
