package io.mlmanager.mlrunner.gateway;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import org.junit.jupiter.api.Test;

/** The gateway's server sockets: connections it accepts send without Nagle's delay. */
class GatewayServersTest {
    @Test
    void acceptedConnectionsHaveTcpNoDelay() throws Exception {
        InetAddress loopback = InetAddress.getLoopbackAddress();
        try (ServerSocket server =
                        new GatewayServers.NoDelayServerSocketFactory().createServerSocket(0, 5, loopback);
                Socket client = new Socket(loopback, server.getLocalPort());
                Socket accepted = server.accept()) {
            assertTrue(accepted.getTcpNoDelay());
            assertTrue(accepted.getInetAddress().isLoopbackAddress());
        }
        // (What a plain server socket would give: the default, Nagle on.)
        try (ServerSocket plain = new ServerSocket(0, 5, loopback);
                Socket client = new Socket(loopback, plain.getLocalPort());
                Socket accepted = plain.accept()) {
            assertFalse(accepted.getTcpNoDelay());
        }
    }
}
