package io.mlmanager.mlrunner;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.util.Properties;

/** mlrunner's version and the versions of the libraries it was built with. */
public final class Version {
    private static final Properties PROPERTIES = load();

    private Version() {}

    /** mlrunner's version (the Maven project version). */
    public static String version() {
        return PROPERTIES.getProperty("version", "unknown");
    }

    /** One line: mlrunner's version and those of h2o-genmodel, onnxruntime and py4j. */
    public static String summary() {
        return "mlrunner " + version()
                + " (h2o-genmodel " + PROPERTIES.getProperty("h2o.version", "?")
                + ", onnxruntime " + PROPERTIES.getProperty("onnxruntime.version", "?")
                + ", py4j " + PROPERTIES.getProperty("py4j.version", "?") + ")";
    }

    private static Properties load() {
        Properties properties = new Properties();
        try (InputStream in = Version.class.getResourceAsStream("/mlrunner-version.properties")) {
            if (in != null) {
                properties.load(in);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read mlrunner-version.properties", e);
        }
        return properties;
    }
}
