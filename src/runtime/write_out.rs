//! Handing a buffer to a writer as far as the writer takes it now: the loop every buffered
//! stream here ends in (the agent port's TLS records, coalesced socket writes).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::io::AsyncWrite;

/// Writes `buf[*sent..]` to `io` until the writer has taken all of it (Ready(Ok)), has no
/// room (Pending, `*sent` counting what it took), or fails. A write that takes nothing
/// is an error, not progress, so a writer that never takes a byte cannot spin its caller.
pub fn poll_write_out<W: AsyncWrite + Unpin + ?Sized>(
    io: &mut W,
    cx: &mut Context<'_>,
    buf: &[u8],
    sent: &mut usize,
) -> Poll<io::Result<()>> {
    while *sent < buf.len() {
        match Pin::new(&mut *io).poll_write(cx, &buf[*sent..]) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => *sent += n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    Poll::Ready(Ok(()))
}

#[cfg(test)]
mod tests {
    use futures::task::noop_waker;

    use super::*;

    /// Takes at most `step` bytes a write and `room` in all; then Pending, or a 0-byte
    /// write when `zero_when_full`.
    struct Sink {
        got: Vec<u8>,
        step: usize,
        room: usize,
        zero_when_full: bool,
    }

    impl AsyncWrite for Sink {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.step).min(self.room - self.got.len());
            if n == 0 && !self.zero_when_full {
                return Poll::Pending;
            }
            self.got.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    // Goal: partial writes add up to the whole buffer in order; a full writer leaves
    // `sent` at what it took and the rest goes on from there; a 0-byte write is an error.
    #[test]
    fn writes_resume_where_the_writer_stopped_and_a_zero_write_fails() {
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let data: Vec<u8> = (0..100).collect();
        let mut sink = Sink {
            got: Vec::new(),
            step: 7,
            room: 40,
            zero_when_full: false,
        };
        let mut sent = 0;
        assert!(poll_write_out(&mut sink, &mut cx, &data, &mut sent).is_pending());
        assert_eq!(sent, 40);
        sink.room = 100;
        assert!(matches!(
            poll_write_out(&mut sink, &mut cx, &data, &mut sent),
            Poll::Ready(Ok(()))
        ));
        assert_eq!((sent, &sink.got), (100, &data));

        let mut full = Sink {
            got: Vec::new(),
            step: 7,
            room: 10,
            zero_when_full: true,
        };
        let mut sent = 0;
        match poll_write_out(&mut full, &mut cx, &data, &mut sent) {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::WriteZero),
            other => panic!("a writer that takes nothing is an error: {other:?}"),
        }
        assert_eq!(sent, 10);
    }
}
