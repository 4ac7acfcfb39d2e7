package io.mlmanager.mlrunner.sql;

import io.mlmanager.mlrunner.cache.ModelCache;
import io.mlmanager.mlrunner.runner.Runner;
import io.mlmanager.mlrunner.runner.Runners;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;

/**
 * The process-wide model cache of the SQL functions and triggers, filled from the
 * {@code MLMANAGER_MODELS} table: {@code MODEL_ID VARCHAR PRIMARY KEY, FORMAT VARCHAR
 * ('mojo' or 'onnx'), PAYLOAD BLOB or VARBINARY, METADATA VARCHAR} (the ONNX metadata JSON).
 *
 * <p>The cache holds {@code -Dmlrunner.sql.cacheSize} models (default 16). A model found in
 * the cache is used as it is; {@code MLR_LOAD} replaces it.
 */
public final class SqlModels {
    /** The table holding the models. */
    public static final String TABLE = "MLMANAGER_MODELS";

    static final ModelCache CACHE =
            new ModelCache(Integer.getInteger("mlrunner.sql.cacheSize", ModelCache.DEFAULT_CAPACITY));

    private SqlModels() {}

    /** The cache shared by every SQL function and trigger of this JVM. */
    public static ModelCache cache() {
        return CACHE;
    }

    /** Loads (or finds loaded) a model from its bytes, keyed by model id and the payload's SHA-256. */
    static Runner load(String modelId, String format, byte[] payload, String metadataJson) {
        if (modelId == null || payload == null) {
            throw new IllegalArgumentException("MLR_LOAD needs a model id and a payload");
        }
        String checksum = Runners.sha256(payload);
        return CACHE.getOrLoad(modelId, checksum, () -> Runners.load(format, payload, metadataJson));
    }

    /** The cached runner of a model id, else the model read from {@code MLMANAGER_MODELS} and loaded. */
    static Runner runner(Connection connection, String modelId) throws SQLException {
        Runner cached = CACHE.get(modelId);
        return cached != null ? cached : reload(connection, modelId);
    }

    /** Reads the model from {@code MLMANAGER_MODELS} and loads it if its payload changed. */
    static Runner reload(Connection connection, String modelId) throws SQLException {
        if (modelId == null) {
            throw new SQLException("the model id is NULL");
        }
        String sql = "SELECT MODEL_ID, FORMAT, PAYLOAD, METADATA FROM " + TABLE
                + " WHERE MODEL_ID = ? OR UPPER(MODEL_ID) = UPPER(?) ORDER BY CASE WHEN MODEL_ID = ? THEN 0 ELSE 1 END";
        try (PreparedStatement statement = connection.prepareStatement(sql)) {
            statement.setString(1, modelId);
            statement.setString(2, modelId);
            statement.setString(3, modelId);
            try (ResultSet rows = statement.executeQuery()) {
                if (!rows.next()) {
                    throw new SQLException("no model " + modelId + " in " + TABLE
                            + ": insert it there, or load it with MLR_LOAD(model_id, format, payload)");
                }
                byte[] payload = rows.getBytes("PAYLOAD");
                if (payload == null) {
                    throw new SQLException("model " + modelId + " in " + TABLE + " has a NULL PAYLOAD");
                }
                String format = rows.getString("FORMAT");
                String metadata = rows.getString("METADATA");
                try {
                    return load(modelId, format, payload, metadata);
                } catch (IllegalArgumentException e) {
                    throw new SQLException("model " + modelId + " in " + TABLE + ": " + e.getMessage(), e);
                }
            }
        }
    }
}
