//! The glue between glommio's futures-io sockets and tokio-io consumers (h2, hyper):
//! TLS via futures-rustls on the glommio stream, then `tokio_util::compat` on top.

use glommio::net::TcpStream;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

pub type ServerTls = futures_rustls::server::TlsStream<TcpStream>;
pub type ServerIo = Compat<ServerTls>;

pub fn tokio_io(tls: ServerTls) -> ServerIo {
    tls.compat()
}
