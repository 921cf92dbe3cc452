//! Loopback ports for the servers tests start (tansu, moto, a `feeder` process's
//! listeners): one way to pick one, so every test picks it the same way.

use std::net::TcpListener;

/// A port free on 127.0.0.1 right now: the OS picks it, the listener is closed at once.
/// Another process may take it before the test binds it; the tests that start servers
/// bind soon after, and a lost race fails loudly (the server does not start).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
