package io.mlmanager.mlrunner.serve;

import java.util.ArrayList;
import java.util.List;

/** CSV records (RFC 4180: quoted fields may hold commas, quotes as "" and line breaks). */
final class Csv {
    private Csv() {}

    /**
     * The records of {@code text}; blank lines are skipped, as pandas skips them.
     *
     * @throws BadRequest for a quoted field that never ends
     */
    static List<List<String>> parse(String text) {
        List<List<String>> records = new ArrayList<>();
        List<String> record = new ArrayList<>();
        StringBuilder field = new StringBuilder();
        boolean quoted = false;
        boolean fieldStarted = false;
        int length = text.length();
        for (int i = 0; i < length; i++) {
            char c = text.charAt(i);
            if (quoted) {
                if (c == '"') {
                    if (i + 1 < length && text.charAt(i + 1) == '"') {
                        field.append('"');
                        i++;
                    } else {
                        quoted = false;
                    }
                } else {
                    field.append(c);
                }
            } else if (c == '"') {
                quoted = true;
                fieldStarted = true;
            } else if (c == ',') {
                record.add(field.toString());
                field.setLength(0);
                fieldStarted = true;
            } else if (c == '\n' || c == '\r') {
                if (c == '\r' && i + 1 < length && text.charAt(i + 1) == '\n') {
                    i++;
                }
                end(records, record, field, fieldStarted);
                record = new ArrayList<>();
                fieldStarted = false;
            } else {
                field.append(c);
                fieldStarted = true;
            }
        }
        if (quoted) {
            throw new BadRequest("Failed to parse input as a Pandas DataFrame: a quoted CSV field never ends");
        }
        end(records, record, field, fieldStarted);
        return records;
    }

    private static void end(List<List<String>> records, List<String> record, StringBuilder field,
            boolean fieldStarted) {
        if (fieldStarted || !record.isEmpty()) {
            record.add(field.toString());
            records.add(record);
        }
        field.setLength(0);
    }
}
