//! `--bare-tls-server` and `--bare-tls-connect`: the baseline P6 (tuning.md) compares the
//! frontend's CPU per accepted agent connection with. The in-memory handshakes of
//! `--measure-handshake` leave out what any TLS server on a TCP socket pays per connection
//! (accept, the socket's reads and writes, close); this server pays all of it and nothing
//! more: the frontend's own agent-port rustls config on the frontend's kind of socket
//! (glommio's TcpStream under futures-rustls), with no HTTP/2, no session and no datastore.
//! The client is plain blocking rustls on std threads, since only the server is measured.

pub mod client;
pub mod server;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    /// Goal: the bare server completes real mTLS handshakes over loopback sockets and
    /// resumes them when the client offers a ticket. Method: a generated deployment, the
    /// server on its own thread, 20 full then 20 resumed connections from 4 workers; each
    /// worker's first resumed-run connection has no ticket yet, so 16 resume.
    #[test]
    fn full_and_resumed_connections_complete() {
        let dir = std::env::temp_dir().join(format!("loadgen-bare-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut opts = packhunt::config::generate::GenerateOptions::new(&dir);
        opts.admin_password = Some("pw".into());
        let generated = packhunt::config::generate::generate(&opts).unwrap();
        let server_opts = server::ServerOptions::load(&generated.server_config_path, None).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let server = std::thread::spawn({
            let stop = stop.clone();
            move || {
                server::run(server_opts, "127.0.0.1:0".parse().unwrap(), stop, |addr| {
                    bound_tx.send(addr).unwrap()
                })
            }
        });
        let target = bound_rx.recv().unwrap();
        let client_opts = |resumed| client::ClientOptions {
            target,
            connections: 20,
            concurrency: 4,
            resumed,
            source_ips: 2,
        };
        let config = &generated.client_config_path;
        let full = client::run(config, &client_opts(false)).unwrap();
        let resumed = client::run(config, &client_opts(true)).unwrap();
        stop.store(true, Ordering::Relaxed);
        let served = server.join().unwrap().unwrap();

        assert_eq!(
            (full.handshakes, full.resumed, full.errors),
            (20, 0, 0),
            "{:?}",
            full.first_error
        );
        assert_eq!(
            (resumed.handshakes, resumed.resumed, resumed.errors),
            (20, 16, 0)
        );
        assert_eq!(served.connections_accepted, 40);
        assert_eq!(served.handshakes_completed, 40);
        assert_eq!(
            served.handshakes_resumed, 16,
            "the server resumed what the client did"
        );
        assert_eq!(served.handshake_failures, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
