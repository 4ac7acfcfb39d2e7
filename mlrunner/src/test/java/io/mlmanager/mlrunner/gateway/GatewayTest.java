package io.mlmanager.mlrunner.gateway;

import static io.mlmanager.mlrunner.Fixtures.assertOutputs;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.mlmanager.mlrunner.Fixtures;
import io.mlmanager.mlrunner.block.ColumnBlock;
import io.mlmanager.mlrunner.cache.ModelCache;
import io.mlmanager.mlrunner.runner.Runners;
import org.junit.jupiter.api.Test;

/** The py4j entry point, called directly (as py4j would, with the same argument types). */
class GatewayTest {
    private final Gateway gateway = new Gateway(new ModelCache(2));

    private static String checksum(Fixtures.Model model) {
        return Runners.sha256(model.payload());
    }

    @Test
    void loadsScoresAndDescribesAMojo() {
        Fixtures.Model model = Fixtures.model("gbm_multinomial");
        String checksum = checksum(model);
        assertFalse(gateway.has("iris", checksum));
        JsonObject description = JsonParser.parseString(
                gateway.load("iris", checksum, "mojo", model.payload(), null)).getAsJsonObject();
        assertEquals("classification", description.get("kind").getAsString());
        assertEquals("mojo", description.get("format").getAsString());
        assertEquals(4, description.getAsJsonArray("inputs").size());
        assertEquals("[\"alpha\",\"beta\",\"gamma\"]", description.getAsJsonArray("classes").toString());
        assertEquals("{\"name\":\"PREDICTION\",\"type\":\"text\"}",
                description.getAsJsonArray("outputs").get(0).toString());
        assertTrue(gateway.has("iris", checksum));
        assertTrue(gateway.has("iris", checksum.toUpperCase()));
        assertEquals(description.toString(), gateway.describe("iris", checksum));

        byte[] answer = gateway.score("iris", checksum, model.inputs().toBytes());
        assertOutputs(model, ColumnBlock.fromBytes(answer), 1e-6);

        JsonObject stats = JsonParser.parseString(gateway.stats()).getAsJsonObject();
        assertEquals(1, stats.get("size").getAsInt());
        assertEquals(1, stats.get("loads").getAsInt());
        assertEquals(model.rows(), stats.get("rows_scored").getAsInt());
        assertEquals(1, stats.get("batches_scored").getAsInt());
    }

    @Test
    void loadsAndScoresOnnxWithMetadata() {
        Fixtures.Model model = Fixtures.model("logreg");
        String checksum = checksum(model);
        String json = gateway.load("lr", checksum, "onnx", model.payload(), model.metadataJson());
        assertTrue(json.contains("\"format\":\"onnx\""), json);
        assertOutputs(model, ColumnBlock.fromBytes(gateway.score("lr", checksum, model.inputs().toBytes())), 1e-4);
    }

    @Test
    void loadingTwiceKeepsTheLoadedModel() {
        Fixtures.Model model = Fixtures.model("kmeans");
        String checksum = checksum(model);
        gateway.load("k", checksum, "mojo", model.payload(), null);
        gateway.load("k", checksum, "mojo", model.payload(), null);
        assertTrue(gateway.stats().contains("\"loads\":1"), gateway.stats());
    }

    @Test
    void aWrongChecksumIsRefused() {
        Fixtures.Model model = Fixtures.model("kmeans");
        IllegalArgumentException error = assertThrows(IllegalArgumentException.class,
                () -> gateway.load("k", "0".repeat(64), "mojo", model.payload(), null));
        assertTrue(error.getMessage().startsWith("model k: the payload's sha256 is " + checksum(model)),
                error.getMessage());
    }

    @Test
    void anUnknownModelAsksForALoad() {
        ModelNotLoadedException error = assertThrows(ModelNotLoadedException.class,
                () -> gateway.score("nope", "abc", new byte[0]));
        assertTrue(error.getMessage().startsWith("MODEL_NOT_LOADED:"), error.getMessage());
        assertThrows(ModelNotLoadedException.class, () -> gateway.describe("nope", "abc"));
    }

    @Test
    void anEvictedModelAsksForALoad() {
        Fixtures.Model kmeans = Fixtures.model("kmeans");
        Fixtures.Model regression = Fixtures.model("gbm_regression");
        Fixtures.Model binomial = Fixtures.model("gbm_binomial");
        gateway.load("k", checksum(kmeans), "mojo", kmeans.payload(), null);
        gateway.load("r", checksum(regression), "mojo", regression.payload(), null);
        gateway.load("b", checksum(binomial), "mojo", binomial.payload(), null);
        ModelNotLoadedException error = assertThrows(ModelNotLoadedException.class,
                () -> gateway.score("k", checksum(kmeans), kmeans.inputs().toBytes()));
        assertTrue(error.getMessage().startsWith("MODEL_NOT_LOADED:"));
        assertTrue(gateway.stats().contains("\"evictions\":1"), gateway.stats());
    }

    @Test
    void badBatchesAndModelsSayWhy() {
        Fixtures.Model model = Fixtures.model("gbm_regression");
        String checksum = checksum(model);
        gateway.load("r", checksum, "mojo", model.payload(), null);
        IllegalArgumentException bad = assertThrows(IllegalArgumentException.class,
                () -> gateway.score("r", checksum, new byte[] {1, 2, 3}));
        assertTrue(bad.getMessage().contains("truncated"), bad.getMessage());
        IllegalArgumentException missing = assertThrows(IllegalArgumentException.class,
                () -> gateway.score("r", checksum, ColumnBlock.of().toBytes()));
        assertTrue(missing.getMessage().startsWith("model r: the batch lacks model input x1"), missing.getMessage());
        byte[] garbage = {1, 2, 3, 4};
        IllegalArgumentException refused = assertThrows(IllegalArgumentException.class,
                () -> gateway.load("g", Runners.sha256(garbage), "mojo", garbage, null));
        assertTrue(refused.getMessage().startsWith("model g: cannot read the payload as an H2O MOJO zip"),
                refused.getMessage());
    }

    @Test
    void versionAndPid() {
        assertTrue(gateway.version().matches("\\d+\\.\\d+\\.\\d+.*"), gateway.version());
        assertEquals(ProcessHandle.current().pid(), gateway.pid());
    }
}
