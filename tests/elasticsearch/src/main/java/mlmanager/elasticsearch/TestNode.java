package mlmanager.elasticsearch;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CountDownLatch;

import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.node.InternalSettingsPreparer;
import org.elasticsearch.node.Node;
import org.elasticsearch.plugins.PluginsLoader;

/**
 * One real Elasticsearch node in this JVM, for the integration tests.
 *
 * <p>What the distribution's launcher does, minus what a test node does not need: no
 * entitlements/security manager, no bootstrap checks (single-node discovery skips them
 * anyway), console logging. The node itself (indexing, search, the REST layer over netty)
 * is the released server code.
 *
 * <p>Usage: {@code TestNode <home> <data dir> <http port> <transport port>}; prints
 * {@code READY <http port>} on stdout once the node answers, and stops on SIGTERM.
 */
public final class TestNode {

    private TestNode() {}

    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: TestNode <home> <data dir> <http port> <transport port>");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        Path data = Path.of(args[1]).toAbsolutePath();
        Path config = Files.createDirectories(data.resolve("config"));
        Settings settings = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", data.resolve("data").toString())
            .put("path.logs", data.resolve("logs").toString())
            .put("cluster.name", "mlmanager-tests")
            .put("node.name", "node-0")
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", args[2])
            .put("transport.port", args[3])
            // A nearly full disk of a test machine must not turn the indices read-only.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("logger.level", "WARN")
            .build();
        LogConfigurator.configureWithoutConfig(settings);
        Environment environment = InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), config, () -> "node-0");
        // No server exports: the server runs from the classpath (the unnamed module), not as
        // the named module whose qualified exports the distribution's loader adds.
        PluginsLoader plugins = PluginsLoader.createPluginsLoader(
            PluginsLoader.loadModulesBundles(environment.modulesDir()), Set.of(), Map.of(), false);
        Node node = new Node(environment, plugins);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                stopped.countDown();
            }
        }, "stop-node"));
        node.start();
        System.out.println("READY " + args[2]);
        System.out.flush();
        stopped.await();
    }
}
