package io.mlmanager.mlrunner.serve;

import io.mlmanager.mlrunner.gateway.Log;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.time.Duration;

/**
 * Where {@code serve} gets its model bundle: a file, or a URL fetched with a bearer token (the
 * per-deployment read-only token of ML Manager's model route). The token is never logged.
 */
public final class ModelSource {
    private static final int ATTEMPTS = 3;

    private ModelSource() {}

    /**
     * The bundle's bytes.
     *
     * @param token the bearer token for a URL, or null to send none
     * @throws IOException if the file cannot be read or the URL does not answer 200 (after
     *     {@value #ATTEMPTS} attempts for network errors and 5xx answers)
     */
    public static byte[] fetch(ServeOptions options, String token) throws IOException {
        if (!options.modelIsUrl()) {
            try {
                return Files.readAllBytes(Path.of(options.model()));
            } catch (NoSuchFileException e) {
                throw new IOException("no model file " + options.model(), e);
            }
        }
        HttpClient client = HttpClient.newBuilder()
                .connectTimeout(Duration.ofSeconds(10))
                .followRedirects(HttpClient.Redirect.NORMAL)
                .build();
        HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(options.model()))
                .timeout(Duration.ofMinutes(5))
                .GET();
        if (token != null) {
            request.header("Authorization", "Bearer " + token);
        }
        IOException last = null;
        for (int attempt = 1; attempt <= ATTEMPTS; attempt++) {
            try {
                HttpResponse<byte[]> response = client.send(request.build(), HttpResponse.BodyHandlers.ofByteArray());
                int status = response.statusCode();
                if (status == 200) {
                    return response.body();
                }
                String refused = status == 401 || status == 403
                        ? " (the token was " + (token == null ? "not sent: set --token-env or --token-file)" : "refused)")
                        : "";
                last = new IOException(options.model() + " answered HTTP " + status + refused);
                if (status < 500) {
                    throw last; // a client error: asking again will not help
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException("interrupted while fetching the model", e);
            } catch (IOException e) {
                if (e == last) {
                    throw e;
                }
                last = new IOException("cannot fetch " + options.model() + ": " + e, e);
            }
            if (attempt < ATTEMPTS) {
                Log.info(last.getMessage() + " (attempt " + attempt + " of " + ATTEMPTS + ")");
                sleep(attempt * 1000L);
            }
        }
        throw last;
    }

    private static void sleep(long millis) throws IOException {
        try {
            Thread.sleep(millis);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted while fetching the model", e);
        }
    }
}
