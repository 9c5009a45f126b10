//! The agent port's TLS: rustls's unbuffered connection under a stream that owns no
//! buffer while the connection is idle.
//!
//! rustls's buffered `ServerConnection` (under `futures_rustls`) keeps a 4 KiB deframer
//! buffer per connection, resized and zero-filled before every read, so it is resident
//! on every idle agent (tuning.md, P1). Here the ciphertext is read into one buffer per
//! thread and processed there; a connection keeps bytes of its own only for what is left
//! over between polls: a record split across reads, plaintext its reader had no room for
//! yet, ciphertext the socket has not taken. Each of those is freed once empty.
//!
//! Writes are encrypted into a per-thread buffer and handed to the socket at once (the
//! socket below is `CoalescedWrites`, which takes them whole and sends once per poll).

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncryptError, UnbufferedStatus, WriteTraffic};
use rustls::ServerConfig;

use crate::limits::{
    TLS_MIN_READ_BYTES, TLS_READ_SCRATCH_BYTES, TLS_RECORD_OVERHEAD_BYTES, TLS_WRITE_CHUNK_BYTES,
};
use crate::runtime::write_out::poll_write_out;

thread_local! {
    /// Ciphertext as read: a connection's left-over bytes, then what the socket had.
    static READ_SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; TLS_READ_SCRATCH_BYTES]);
    /// Records as encrypted, before the socket takes them.
    static WRITE_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The agent port's server configuration; cheap to clone for each connection.
#[derive(Clone)]
pub struct AgentTlsConfig(Arc<ServerConfig>);

impl AgentTlsConfig {
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self(config)
    }

    /// Runs the server's side of the handshake on `io`.
    pub fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: S,
    ) -> impl Future<Output = io::Result<AgentTls<S>>> {
        let conn = UnbufferedServerConnection::new(self.0.clone());
        let mut stream = conn.map(|conn| AgentTls::new(io, conn));
        futures::future::poll_fn(move |cx| {
            let tls = match &mut stream {
                Ok(tls) => tls,
                Err(e) => return Poll::Ready(Err(tls_error(e.clone()))),
            };
            ready!(tls.poll_handshake(cx))?;
            let done = std::mem::replace(
                &mut stream,
                Err(rustls::Error::General("handshake already taken".into())),
            );
            Poll::Ready(done.map_err(tls_error))
        })
    }
}

/// A server-side TLS stream over `S` (futures-io), after its handshake.
pub struct AgentTls<S> {
    io: S,
    conn: UnbufferedServerConnection,
    /// Ciphertext read but not processed yet (a record not whole, a handshake message
    /// not whole); it goes in front of the next read.
    incoming: Vec<u8>,
    /// Plaintext decrypted but not read yet; `plain_at` of it is gone.
    plaintext: Vec<u8>,
    plain_at: usize,
    /// Records encrypted but not taken by the socket yet; `out_at` of them are.
    outgoing: Vec<u8>,
    out_at: usize,
    /// The peer has ended its side (close_notify or end of stream).
    read_closed: bool,
    close_notify_sent: bool,
}

/// Where processing the incoming bytes stopped.
#[derive(Debug, PartialEq, Eq)]
enum Reached {
    /// More bytes from the peer are needed (the handshake waits for them, or the last
    /// record is not whole).
    NeedInput,
    /// Everything in is processed and the handshake is done.
    Established,
    /// The peer sent close_notify.
    PeerClosed,
}

impl<S> AgentTls<S> {
    fn new(io: S, conn: UnbufferedServerConnection) -> Self {
        Self {
            io,
            conn,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            plain_at: 0,
            outgoing: Vec::new(),
            out_at: 0,
            read_closed: false,
            close_notify_sent: false,
        }
    }

    /// The connection's TLS state: peer certificates, handshake kind.
    pub fn connection(&self) -> &rustls::CommonState {
        &self.conn
    }

    /// Processes `input` (ciphertext, from its start): decrypted bytes go to `out` and,
    /// past its end, to `self.plaintext`; handshake records go to `self.outgoing`.
    /// Returns how many bytes of `input` are done with and where it stopped; the rest
    /// must come first next time.
    fn process(
        &mut self,
        input: &mut [u8],
        out: &mut PlainOut<'_>,
    ) -> Result<(usize, Reached), rustls::Error> {
        let mut at = 0;
        loop {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut input[at..]);
            let mut sink = PlainSink {
                out: &mut *out,
                spill: &mut self.plaintext,
            };
            let reached = match state {
                Ok(state) => handle_state(state, &mut sink, &mut self.outgoing),
                Err(e) => {
                    // The alert rustls queued for the peer, if any, still goes out.
                    self.collect_alert(&mut input[at + discard..]);
                    return Err(e);
                }
            };
            at += discard;
            match reached {
                Ok(None) => continue,
                Ok(Some(reached)) => return Ok((at, reached)),
                Err(e) => return Err(e),
            }
        }
    }

    /// After an error rustls may hold an alert for the peer: encode it so that the
    /// socket's last send carries it. `rest` is the input not discarded yet: rustls's
    /// handshake deframer keeps positions in it, so it must be handed back whole.
    ///
    /// One call only: rustls hands queued records out before it deframes again, and
    /// deframing the same bad bytes again would fail (and alert) a second time.
    fn collect_alert(&mut self, rest: &mut [u8]) {
        let UnbufferedStatus { state, .. } = self.conn.process_tls_records(rest);
        if let Ok(ConnectionState::EncodeTlsData(mut encode)) = state {
            let _ = encode_into(&mut self.outgoing, |out| encode.encode(out));
        }
    }

    /// Plaintext already decrypted, copied out; `None` if there is none.
    fn take_plaintext(&mut self, buf: &mut [u8]) -> Option<usize> {
        let left = &self.plaintext[self.plain_at..];
        if left.is_empty() {
            return None;
        }
        let n = left.len().min(buf.len());
        buf[..n].copy_from_slice(&left[..n]);
        self.plain_at += n;
        if self.plain_at == self.plaintext.len() {
            // Freed, not kept: an idle connection holds no buffer.
            self.plaintext = Vec::new();
            self.plain_at = 0;
        }
        Some(n)
    }
}

/// The reader's buffer, filled from the front.
struct PlainOut<'b> {
    buf: &'b mut [u8],
    filled: usize,
}

impl PlainOut<'_> {
    fn none() -> PlainOut<'static> {
        PlainOut {
            buf: &mut [],
            filled: 0,
        }
    }
}

/// Where decrypted bytes go: the reader's buffer, then the connection's spill.
struct PlainSink<'a, 'b> {
    out: &'a mut PlainOut<'b>,
    spill: &'a mut Vec<u8>,
}

impl PlainSink<'_, '_> {
    fn put(&mut self, mut bytes: &[u8]) {
        if self.spill.is_empty() {
            let room = &mut self.out.buf[self.out.filled..];
            let n = room.len().min(bytes.len());
            room[..n].copy_from_slice(&bytes[..n]);
            self.out.filled += n;
            bytes = &bytes[n..];
        }
        self.spill.extend_from_slice(bytes);
    }
}

/// One state of rustls's: `Ok(None)` to go on processing.
fn handle_state(
    state: ConnectionState<'_, '_, ServerConnectionData>,
    plaintext: &mut PlainSink<'_, '_>,
    outgoing: &mut Vec<u8>,
) -> Result<Option<Reached>, rustls::Error> {
    match state {
        ConnectionState::ReadTraffic(mut traffic) => {
            while let Some(record) = traffic.next_record() {
                plaintext.put(record?.payload);
            }
            Ok(None)
        }
        ConnectionState::EncodeTlsData(mut encode) => {
            encode_into(outgoing, |out| encode.encode(out))
                .map_err(|e| rustls::Error::General(format!("encoding a TLS record: {e:?}")))?;
            Ok(None)
        }
        // The records stay in `outgoing`, in order, and go out before anything written
        // after them: for rustls they are transmitted.
        ConnectionState::TransmitTlsData(transmit) => {
            transmit.done();
            Ok(None)
        }
        ConnectionState::BlockedHandshake => Ok(Some(Reached::NeedInput)),
        ConnectionState::WriteTraffic(_) => Ok(Some(Reached::Established)),
        ConnectionState::PeerClosed | ConnectionState::Closed => Ok(Some(Reached::PeerClosed)),
        // The agent port accepts no early data (max_early_data_size is 0).
        ConnectionState::ReadEarlyData(_) => Err(rustls::Error::General(
            "early data on the agent port".into(),
        )),
        _ => Err(rustls::Error::General("unexpected TLS state".into())),
    }
}

/// Appends what `encode` writes to `out`, growing it to the size rustls asks for.
fn encode_into<E: InsufficientSize>(
    out: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, E>,
) -> Result<(), E> {
    let start = out.len();
    let mut room = 512;
    loop {
        out.resize(start + room, 0);
        match encode(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(e) => match e.required_size() {
                Some(required) if required > room => room = required,
                _ => {
                    out.truncate(start);
                    return Err(e);
                }
            },
        }
    }
}

/// The size an encode or encrypt asked for when the buffer was too small.
trait InsufficientSize {
    fn required_size(&self) -> Option<usize>;
}

impl InsufficientSize for rustls::unbuffered::EncodeError {
    fn required_size(&self) -> Option<usize> {
        match self {
            rustls::unbuffered::EncodeError::InsufficientSize(e) => Some(e.required_size),
            _ => None,
        }
    }
}

impl InsufficientSize for EncryptError {
    fn required_size(&self) -> Option<usize> {
        match self {
            EncryptError::InsufficientSize(e) => Some(e.required_size),
            _ => None,
        }
    }
}

/// Bytes still missing of the record `kept` begins with (0 if its header is not whole).
fn record_rest(kept: &[u8]) -> usize {
    match kept {
        [_, _, _, hi, lo, ..] => {
            let record = 5 + u16::from_be_bytes([*hi, *lo]) as usize;
            record.saturating_sub(kept.len())
        }
        _ => 0,
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AgentTls<S> {
    /// Until the handshake is done: reads, processes, sends rustls's records.
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_send_outgoing(cx))?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            match ready!(self.poll_read_tls(cx, &mut PlainOut::none()))? {
                Reached::NeedInput | Reached::Established => {}
                // A peer may finish the handshake, send its requests and close in one
                // go: the handshake is done all the same, and the stream's reader gets
                // the requests, then the end.
                Reached::PeerClosed if !self.conn.is_handshaking() => {}
                Reached::PeerClosed => {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
            }
        }
    }

    /// Reads what the socket has after the left-over bytes and processes it all; the
    /// plaintext goes to `out` first.
    fn poll_read_tls(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut PlainOut<'_>,
    ) -> Poll<io::Result<Reached>> {
        READ_SCRATCH.with(|scratch| {
            let mut borrowed;
            let mut private;
            let scratch: &mut Vec<u8> = match scratch.try_borrow_mut() {
                Ok(s) => {
                    borrowed = s;
                    &mut borrowed
                }
                // Only if a stream is read from inside another's read.
                Err(_) => {
                    private = vec![0; TLS_READ_SCRATCH_BYTES];
                    &mut private
                }
            };
            let kept = self.incoming.len();
            if scratch.len() < kept + TLS_READ_SCRATCH_BYTES / 2 {
                scratch.resize(kept + TLS_READ_SCRATCH_BYTES / 2, 0);
            }
            // Ciphertext for about what the reader has room for: more would be decrypted
            // only to wait in the spill, copied twice more and allocated per burst. At
            // least the rest of a record already begun, and never tiny reads.
            let room = out.buf.len() - out.filled;
            let want = if room == 0 {
                TLS_READ_SCRATCH_BYTES / 2
            } else {
                (room + TLS_RECORD_OVERHEAD_BYTES)
                    .max(TLS_MIN_READ_BYTES)
                    .max(record_rest(&self.incoming))
            };
            let end = (kept + want).min(scratch.len());
            let n = ready!(Pin::new(&mut self.io).poll_read(cx, &mut scratch[kept..end]))?;
            // The kept bytes go in front only now: a poll that finds the socket empty
            // (most of them, mid-upload) does not copy them for nothing.
            scratch[..kept].copy_from_slice(&self.incoming);
            if n == 0 {
                self.read_closed = true;
                if kept > 0 || self.conn.is_handshaking() {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
                return Poll::Ready(Ok(Reached::PeerClosed));
            }
            let filled = kept + n;
            let (done, reached) = match self.process(&mut scratch[..filled], out) {
                Ok(processed) => processed,
                Err(e) => {
                    // The alert goes to the socket, which sends what it holds even when
                    // the connection is dropped next.
                    let _ = self.poll_send_outgoing(cx);
                    return Poll::Ready(Err(tls_error(e)));
                }
            };
            self.incoming.clear();
            if done < filled {
                self.incoming.extend_from_slice(&scratch[done..filled]);
            } else {
                self.incoming = Vec::new();
            }
            if reached == Reached::PeerClosed {
                self.read_closed = true;
            }
            Poll::Ready(Ok(reached))
        })
    }

    /// Hands the socket every encrypted byte not taken yet.
    fn poll_send_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(poll_write_out(
            &mut self.io,
            cx,
            &self.outgoing,
            &mut self.out_at
        ))?;
        if !self.outgoing.is_empty() {
            self.outgoing = Vec::new();
            self.out_at = 0;
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Encrypts `data` (and whatever rustls wants sent first) and hands it to the socket;
    /// what the socket does not take now waits in `outgoing`.
    fn encrypt_and_send(&mut self, cx: &mut Context<'_>, data: &[u8]) -> io::Result<()> {
        self.write_records(cx, |traffic, out| traffic.encrypt(data, out))
    }

    /// Has rustls encode records once the connection can write (what it reads meanwhile
    /// goes to the plaintext spill) and queues them for the socket.
    fn write_records(
        &mut self,
        cx: &mut Context<'_>,
        mut encode: impl FnMut(
            &mut WriteTraffic<'_, ServerConnectionData>,
            &mut [u8],
        ) -> Result<usize, EncryptError>,
    ) -> io::Result<()> {
        WRITE_SCRATCH.with(|scratch| -> io::Result<()> {
            let mut scratch = scratch.borrow_mut();
            scratch.clear();
            loop {
                // The bytes kept from the last read, not an empty buffer: rustls's
                // handshake deframer may keep positions in them (a handshake message
                // split across records). Whatever rustls says it is done with is
                // discarded, as after any other call.
                let UnbufferedStatus { discard, state } =
                    self.conn.process_tls_records(&mut self.incoming);
                let encrypted = match state.map_err(tls_error)? {
                    ConnectionState::WriteTraffic(mut traffic) => {
                        encode_into(&mut scratch, |out| encode(&mut traffic, out))
                            .map_err(|e| io::Error::other(e.to_string()))?;
                        true
                    }
                    other => {
                        let mut none = PlainOut::none();
                        let mut sink = PlainSink {
                            out: &mut none,
                            spill: &mut self.plaintext,
                        };
                        if let Some(stop) =
                            handle_state(other, &mut sink, &mut scratch).map_err(tls_error)?
                        {
                            let message = format!("TLS not writable: {stop:?}");
                            return Err(io::Error::new(io::ErrorKind::NotConnected, message));
                        }
                        false
                    }
                };
                self.incoming.drain(..discard);
                if encrypted {
                    break;
                }
            }
            self.queue(cx, &scratch)
        })
    }

    /// Appends `records` behind what waits already, or gives them to the socket.
    fn queue(&mut self, cx: &mut Context<'_>, records: &[u8]) -> io::Result<()> {
        let mut at = 0;
        if self.out_at == self.outgoing.len() {
            if let Poll::Ready(Err(e)) = poll_write_out(&mut self.io, cx, records, &mut at) {
                return Err(e);
            }
        }
        self.outgoing.extend_from_slice(&records[at..]);
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for AgentTls<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if let Some(n) = this.take_plaintext(buf) {
            return Poll::Ready(Ok(n));
        }
        loop {
            if this.read_closed {
                return Poll::Ready(Ok(0));
            }
            let mut out = PlainOut { buf, filled: 0 };
            let read = this.poll_read_tls(cx, &mut out);
            let filled = out.filled;
            // Records rustls queued while reading (a key update's answer) go out now;
            // their send waits for the socket at the latest.
            if this.out_at < this.outgoing.len() {
                if let Poll::Ready(Err(e)) = this.poll_send_outgoing(cx) {
                    return Poll::Ready(Err(e));
                }
            }
            if filled > 0 {
                return Poll::Ready(Ok(filled));
            }
            ready!(read)?;
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for AgentTls<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_send_outgoing(cx))?;
        let n = buf.len().min(TLS_WRITE_CHUNK_BYTES);
        this.encrypt_and_send(cx, &buf[..n])?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_send_outgoing(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.close_notify_sent {
            this.close_notify_sent = true;
            // Best effort: a connection that can no longer write (the handshake never
            // finished, a TLS error) closes without it; the socket's own errors show
            // below.
            let _ = this.write_records(cx, |traffic, out| traffic.queue_close_notify(out));
        }
        ready!(this.poll_send_outgoing(cx))?;
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        Pin::new(&mut this.io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::io::{Read, Write};
    use std::rc::Rc;
    use std::sync::Arc;

    use futures::io::{AsyncReadExt, AsyncWriteExt};
    use futures::task::noop_waker;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection};

    use super::*;

    /// The server's socket: what the client sent, handed out `step` bytes per read (so
    /// records arrive split), and what the server wrote.
    #[derive(Clone, Default)]
    struct Wire {
        to_server: Rc<RefCell<VecDeque<u8>>>,
        to_client: Rc<RefCell<Vec<u8>>>,
        client_closed: Rc<RefCell<bool>>,
        step: usize,
    }

    impl AsyncRead for Wire {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let mut inbound = self.to_server.borrow_mut();
            if inbound.is_empty() {
                return match *self.client_closed.borrow() {
                    true => Poll::Ready(Ok(0)),
                    false => Poll::Pending,
                };
            }
            let n = buf.len().min(self.step).min(inbound.len());
            for (slot, byte) in buf.iter_mut().zip(inbound.drain(..n)) {
                *slot = byte;
            }
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Wire {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.to_client.borrow_mut().extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    struct Fixture {
        server: AgentTlsConfig,
        client: Arc<ClientConfig>,
        name: ServerName<'static>,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let configs = crate::tls::tests::agent_port_configs();
        Fixture {
            server: AgentTlsConfig::new(configs.server),
            client: configs.client,
            name: configs.name,
            _dir: configs.dir,
        }
    }

    /// Polls `future` once with a waker nobody calls: the test moves the bytes itself.
    fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        let waker = noop_waker();
        Pin::new(future).poll(&mut Context::from_waker(&waker))
    }

    /// Moves the client's TLS bytes to the wire and the server's to the client; returns
    /// the plaintext the client got.
    fn exchange(client: &mut ClientConnection, wire: &Wire) -> Vec<u8> {
        let mut out = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut out).unwrap();
        }
        wire.to_server.borrow_mut().extend(out);
        let from_server = std::mem::take(&mut *wire.to_client.borrow_mut());
        let mut from_server = from_server.as_slice();
        let mut heard = Vec::new();
        while !from_server.is_empty() {
            client.read_tls(&mut from_server).unwrap();
            client.process_new_packets().unwrap();
            // rustls holds 16 KiB of plaintext at most: read it as it comes.
            let _ = client.reader().read_to_end(&mut heard);
        }
        heard
    }

    /// A full handshake driven to its end, the server's stream returned.
    fn handshake(f: &Fixture, wire: &Wire) -> (ClientConnection, AgentTls<Wire>) {
        let mut client = ClientConnection::new(f.client.clone(), f.name.clone()).unwrap();
        let mut accept = Box::pin(f.server.accept(wire.clone()));
        for _ in 0..1_000 {
            let _ = exchange(&mut client, wire);
            if let Poll::Ready(done) = poll_once(&mut accept) {
                let _ = exchange(&mut client, wire);
                return (client, done.unwrap());
            }
        }
        panic!("handshake did not finish");
    }

    fn holds_no_buffer(tls: &AgentTls<Wire>) -> bool {
        tls.incoming.capacity() == 0
            && tls.plaintext.capacity() == 0
            && tls.outgoing.capacity() == 0
    }

    #[test]
    fn bytes_cross_both_ways_whole_and_in_order_and_an_idle_stream_holds_no_buffer() {
        let f = fixture();
        // Seven bytes per read: every record arrives in pieces.
        let wire = Wire {
            step: 7,
            ..Wire::default()
        };
        let (mut client, mut server) = handshake(&f, &wire);
        assert!(server
            .connection()
            .peer_certificates()
            .is_some_and(|c| !c.is_empty()));
        assert!(holds_no_buffer(&server));

        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut got = Vec::new();
        let mut buf = [0u8; 1000];
        for chunk in sent.chunks(20_000) {
            client.writer().write_all(chunk).unwrap();
            let _ = exchange(&mut client, &wire);
            while !wire.to_server.borrow().is_empty() || !server.plaintext.is_empty() {
                match poll_once(&mut server.read(&mut buf)) {
                    Poll::Ready(Ok(n)) => got.extend_from_slice(&buf[..n]),
                    Poll::Pending => {}
                    other => panic!("read stopped: {other:?}"),
                }
            }
        }
        assert_eq!(got, sent);
        assert!(holds_no_buffer(&server), "idle after reading");

        let answer: Vec<u8> = (0..40_000u32).map(|i| (i % 13) as u8).collect();
        assert!(poll_once(&mut server.write_all(&answer)).is_ready());
        assert!(poll_once(&mut server.flush()).is_ready());
        let heard = exchange(&mut client, &wire);
        assert_eq!(heard, answer);
        assert!(holds_no_buffer(&server), "idle after writing");
    }

    #[test]
    fn a_small_reader_gets_a_large_record_over_several_reads() {
        let f = fixture();
        let wire = Wire {
            step: usize::MAX,
            ..Wire::default()
        };
        let (mut client, mut server) = handshake(&f, &wire);
        let sent = vec![0x5au8; 16_000];
        client.writer().write_all(&sent).unwrap();
        let _ = exchange(&mut client, &wire);
        let mut got = Vec::new();
        let mut buf = [0u8; 10];
        while got.len() < sent.len() {
            match poll_once(&mut server.read(&mut buf)) {
                Poll::Ready(Ok(n)) => got.extend_from_slice(&buf[..n]),
                other => panic!("read stopped: {other:?}"),
            }
            if got.len() == 10 {
                assert!(server.plaintext.len() > 15_000, "the rest waits decrypted");
            }
        }
        assert_eq!(got, sent);
        assert!(holds_no_buffer(&server));
    }

    #[test]
    fn close_notify_ends_the_read_side_and_close_answers_with_one() {
        let f = fixture();
        let wire = Wire {
            step: usize::MAX,
            ..Wire::default()
        };
        let (mut client, mut server) = handshake(&f, &wire);
        client.send_close_notify();
        let _ = exchange(&mut client, &wire);
        let mut buf = [0u8; 16];
        assert!(matches!(
            poll_once(&mut server.read(&mut buf)),
            Poll::Ready(Ok(0))
        ));
        assert!(poll_once(&mut server.close()).is_ready());
        let _ = exchange(&mut client, &wire);
        assert!(
            client.process_new_packets().unwrap().peer_has_closed(),
            "clean close"
        );
    }

    /// A close while records the reader has not taken yet are buffered (a 10-byte read of
    /// two 100-byte records) still sends close_notify.
    #[test]
    fn close_with_records_unread_still_sends_close_notify() {
        let f = fixture();
        let wire = Wire {
            step: usize::MAX,
            ..Wire::default()
        };
        let (mut client, mut server) = handshake(&f, &wire);
        client.writer().write_all(&[7u8; 100]).unwrap();
        client.writer().write_all(&[8u8; 100]).unwrap();
        let _ = exchange(&mut client, &wire);
        let mut buf = [0u8; 10];
        assert!(matches!(
            poll_once(&mut server.read(&mut buf)),
            Poll::Ready(Ok(10))
        ));
        assert!(poll_once(&mut server.close()).is_ready());
        let _ = exchange(&mut client, &wire);
        assert!(
            client.process_new_packets().unwrap().peer_has_closed(),
            "clean close"
        );
    }

    /// A client that finishes its handshake, sends a request and closes before the
    /// server has read its Finished: the handshake is done, the request readable.
    #[test]
    fn a_peer_that_finishes_writes_and_closes_at_once_is_accepted() {
        let f = fixture();
        let wire = Wire {
            step: usize::MAX,
            ..Wire::default()
        };
        let mut client = ClientConnection::new(f.client.clone(), f.name.clone()).unwrap();
        let mut accept = Box::pin(f.server.accept(wire.clone()));
        while client.is_handshaking() {
            let _ = exchange(&mut client, &wire);
            assert!(
                poll_once(&mut accept).is_pending(),
                "the server needs the Finished"
            );
        }
        client.writer().write_all(b"PRI * HTTP/2.0").unwrap();
        client.send_close_notify();
        let _ = exchange(&mut client, &wire);
        let mut server = match poll_once(&mut accept) {
            Poll::Ready(Ok(server)) => server,
            Poll::Ready(Err(e)) => panic!("handshake failed: {e}"),
            Poll::Pending => panic!("the Finished is in"),
        };
        let mut buf = [0u8; 64];
        let n = match poll_once(&mut server.read(&mut buf)) {
            Poll::Ready(Ok(n)) => n,
            other => panic!("read: {other:?}"),
        };
        assert_eq!(&buf[..n], b"PRI * HTTP/2.0");
        assert!(matches!(
            poll_once(&mut server.read(&mut buf)),
            Poll::Ready(Ok(0))
        ));
    }

    #[test]
    fn garbage_fails_the_handshake_with_an_alert_and_an_early_end_is_an_eof_error() {
        let f = fixture();
        let wire = Wire {
            step: usize::MAX,
            ..Wire::default()
        };
        // A record of no content type TLS knows.
        wire.to_server
            .borrow_mut()
            .extend(*b"\x2c\x03\x01\x00\x05hello");
        let mut accept = Box::pin(f.server.accept(wire.clone()));
        match poll_once(&mut accept) {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}"),
            Poll::Ready(Ok(_)) => panic!("garbage accepted"),
            Poll::Pending => panic!("garbage waited for more"),
        }
        let alert = wire.to_client.borrow();
        assert_eq!(
            alert.first(),
            Some(&0x15),
            "an alert record went to the peer"
        );

        let wire = Wire {
            step: usize::MAX,
            ..Wire::default()
        };
        let mut client = ClientConnection::new(f.client.clone(), f.name.clone()).unwrap();
        let _ = exchange(&mut client, &wire);
        let hello = wire.to_server.borrow().len();
        wire.to_server.borrow_mut().truncate(hello / 2);
        *wire.client_closed.borrow_mut() = true;
        let mut accept = Box::pin(f.server.accept(wire.clone()));
        match poll_once(&mut accept) {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
            _ => panic!("a half ClientHello then the end must fail as an early end"),
        }
    }
}
