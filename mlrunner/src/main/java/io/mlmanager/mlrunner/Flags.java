package io.mlmanager.mlrunner;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/** The command line grammar every mlrunner command shares: {@code --flag value} or {@code --flag=value}. */
public final class Flags {

    private Flags() {
    }

    /**
     * The flags of {@code args} with their values, in order (a flag given twice appears twice).
     *
     * @throws IllegalArgumentException for a flag without a value or a bare argument
     */
    public static List<Map.Entry<String, String>> pairs(List<String> args) {
        List<Map.Entry<String, String>> pairs = new ArrayList<>();
        for (int i = 0; i < args.size(); i++) {
            String flag = args.get(i);
            String value;
            int equals = flag.indexOf('=');
            if (flag.startsWith("--") && equals > 0) {
                value = flag.substring(equals + 1);
                flag = flag.substring(0, equals);
            } else {
                if (i + 1 >= args.size()) {
                    throw new IllegalArgumentException(flag.startsWith("--")
                            ? flag + " needs a value" : "unexpected argument " + flag);
                }
                value = args.get(++i);
            }
            pairs.add(Map.entry(flag, value));
        }
        return pairs;
    }

    /**
     * {@code value} as an integer from {@code min} to {@code max}.
     *
     * @throws IllegalArgumentException naming the flag and the range otherwise
     */
    public static long integer(String flag, String value, long min, long max) {
        try {
            long number = Long.parseLong(value.trim());
            if (number >= min && number <= max) {
                return number;
            }
        } catch (NumberFormatException e) {
            // reported below
        }
        throw new IllegalArgumentException(flag + " must be an integer from " + min + " to " + max
                + ", not " + value);
    }
}
