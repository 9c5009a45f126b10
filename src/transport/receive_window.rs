//! How much an agent connection may send before it is read: the HTTP/2 connection window
//! follows the connection's admitted uploads. Idle, or with requests still waiting for an
//! upload permit, it stays at the protocol's default (64 KiB), so a thousand agents
//! sending at once buffer at most 64 KiB each before admission; an admitted upload widens
//! it by one stream window for as long as its body is read. Upload memory is then
//! `concurrency × max_upload_bytes` plus a small constant per connection, never
//! `connections × stream window`.

use std::cell::Cell;
use std::rc::Rc;
use std::task::{Poll, Waker};

use crate::limits::{H2_CONNECTION_WINDOW_IDLE_BYTES, H2_STREAM_WINDOW_BYTES};

/// Shared by one connection's driver (which owns the h2 connection and applies the
/// target) and its request handlers (which widen it while they read a body).
#[derive(Default)]
pub struct ReceiveWindow {
    admitted: Cell<u32>,
    applied: Cell<u32>,
    waker: Cell<Option<Waker>>,
}

/// Keeps the connection window widened for one admitted upload until dropped.
pub struct Widened(Rc<ReceiveWindow>);

impl Drop for Widened {
    fn drop(&mut self) {
        self.0.set_admitted(self.0.admitted.get() - 1);
    }
}

impl ReceiveWindow {
    /// Widens the window by one stream window while the returned guard lives.
    pub fn widen(self: &Rc<Self>) -> Widened {
        self.set_admitted(self.admitted.get() + 1);
        Widened(self.clone())
    }

    /// The connection window for `admitted` uploads being read at once.
    pub fn target_bytes(admitted: u32) -> u32 {
        H2_CONNECTION_WINDOW_IDLE_BYTES
            .saturating_add(admitted.saturating_mul(H2_STREAM_WINDOW_BYTES))
            .min(MAX_WINDOW_BYTES)
    }

    /// Resolves with the new target once the admitted uploads changed since the last
    /// call; the driver then hands it to h2 (which sends the WINDOW_UPDATE, or holds
    /// updates back until what is in flight falls under a narrower target).
    pub async fn changed(&self) -> u32 {
        futures::future::poll_fn(|cx| self.poll_changed(cx)).await
    }

    /// [`Self::changed`] as a poll, for a driver that waits on several things at once.
    pub fn poll_changed(&self, cx: &mut std::task::Context<'_>) -> Poll<u32> {
        let admitted = self.admitted.get();
        if admitted != self.applied.get() {
            self.applied.set(admitted);
            Poll::Ready(Self::target_bytes(admitted))
        } else {
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }

    fn set_admitted(&self, admitted: u32) {
        self.admitted.set(admitted);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// RFC 9113 6.9.1: a flow-control window may not exceed 2^31 - 1 bytes.
const MAX_WINDOW_BYTES: u32 = (1 << 31) - 1;

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn widens_per_admitted_upload_and_narrows_when_they_end() {
        let window = Rc::new(ReceiveWindow::default());
        assert!(window.changed().now_or_never().is_none(), "no change yet");
        let first = window.widen();
        let second = window.widen();
        assert_eq!(
            window.changed().now_or_never(),
            Some(H2_CONNECTION_WINDOW_IDLE_BYTES + 2 * H2_STREAM_WINDOW_BYTES)
        );
        assert!(window.changed().now_or_never().is_none(), "applied once");
        drop(first);
        assert_eq!(
            window.changed().now_or_never(),
            Some(H2_CONNECTION_WINDOW_IDLE_BYTES + H2_STREAM_WINDOW_BYTES)
        );
        drop(second);
        assert_eq!(
            window.changed().now_or_never(),
            Some(H2_CONNECTION_WINDOW_IDLE_BYTES)
        );
    }

    #[test]
    fn a_window_never_exceeds_the_protocol_maximum() {
        assert_eq!(ReceiveWindow::target_bytes(u32::MAX), MAX_WINDOW_BYTES);
    }
}
