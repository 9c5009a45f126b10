//! Per-connection frame rates on the agent port. h2 answers PINGs and SETTINGS itself
//! and bounds what it buffers for them, but not the CPU a flood of them, of resets or of
//! header blocks costs. [`FrameMeter`] sits between TLS and h2, reads the HTTP/2 frame
//! headers as the bytes go by (no copy, no allocation) and takes a token per frame from
//! its kind's bucket. A kind over its rate trips the [`FloodAlarm`]: the meter stops
//! reading (h2 sees nothing more from the peer) and the connection's driver ends the
//! connection with GOAWAY ENHANCE_YOUR_CALM.

use std::cell::Cell;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use crate::limits::{
    H2_CONTINUATIONS_PER_SECOND, H2_CONTINUATION_BURST_COUNT, H2_HEADERS_BURST_COUNT,
    H2_HEADERS_PER_SECOND, H2_PINGS_PER_SECOND, H2_PING_BURST_COUNT, H2_RESETS_PER_SECOND,
    H2_RESET_BURST_COUNT, H2_SETTINGS_BURST_COUNT, H2_SETTINGS_PER_SECOND,
    H2_SMALL_FRAMES_PER_SECOND, H2_SMALL_FRAME_BURST_COUNT,
};
use crate::metrics::FloodFrame;
use crate::runtime::observed_read::{ObservedRead, ReadObserver};
use crate::runtime::rate::TokenBucket;

/// RFC 9113 3.4: the client's connection preface, before its first frame.
const PREFACE_BYTES: usize = 24;
const FRAME_HEADER_BYTES: usize = 9;

/// Set by the meter when a kind went over its rate; the driver waits on it.
#[derive(Clone, Default)]
pub struct FloodAlarm(Rc<AlarmState>);

#[derive(Default)]
struct AlarmState {
    tripped: Cell<Option<FloodFrame>>,
    waker: Cell<Option<Waker>>,
}

impl FloodAlarm {
    fn trip(&self, frame: FloodFrame) {
        if self.0.tripped.get().is_none() {
            self.0.tripped.set(Some(frame));
        }
        if let Some(waker) = self.0.waker.take() {
            waker.wake();
        }
    }

    fn tripped(&self) -> Option<FloodFrame> {
        self.0.tripped.get()
    }

    /// Ready with the flooded kind once the meter tripped.
    pub fn poll_tripped(&self, cx: &mut std::task::Context<'_>) -> Poll<FloodFrame> {
        match self.0.tripped.get() {
            Some(frame) => Poll::Ready(frame),
            None => {
                self.0.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }
}

struct Buckets {
    ping: TokenBucket,
    settings: TokenBucket,
    resets: TokenBucket,
    headers: TokenBucket,
    continuations: TokenBucket,
    small: TokenBucket,
}

impl Buckets {
    fn new() -> Self {
        Self {
            ping: TokenBucket::new(H2_PINGS_PER_SECOND, H2_PING_BURST_COUNT),
            settings: TokenBucket::new(H2_SETTINGS_PER_SECOND, H2_SETTINGS_BURST_COUNT),
            resets: TokenBucket::new(H2_RESETS_PER_SECOND, H2_RESET_BURST_COUNT),
            headers: TokenBucket::new(H2_HEADERS_PER_SECOND, H2_HEADERS_BURST_COUNT),
            continuations: TokenBucket::new(
                H2_CONTINUATIONS_PER_SECOND,
                H2_CONTINUATION_BURST_COUNT,
            ),
            small: TokenBucket::new(H2_SMALL_FRAMES_PER_SECOND, H2_SMALL_FRAME_BURST_COUNT),
        }
    }

    /// The kind of a frame whose rate is metered, and its bucket; `None` for frames
    /// that carry real work (DATA with a payload or END_STREAM, GOAWAY, unknown types,
    /// which h2 ignores at no cost).
    fn of(&self, kind: u8, flags: u8, length: usize) -> Option<(FloodFrame, &TokenBucket)> {
        const END_STREAM: u8 = 0x1;
        Some(match kind {
            0x0 if length == 0 && flags & END_STREAM == 0 => (FloodFrame::Small, &self.small),
            0x1 => (FloodFrame::Headers, &self.headers),
            0x2 | 0x8 => (FloodFrame::Small, &self.small),
            0x3 => (FloodFrame::RstStream, &self.resets),
            0x4 => (FloodFrame::Settings, &self.settings),
            0x6 => (FloodFrame::Ping, &self.ping),
            0x9 => (FloodFrame::Continuation, &self.continuations),
            _ => return None,
        })
    }
}

/// `inner` read through a [`FrameCounter`]: h2 sees nothing more once it trips.
pub type FrameMeter<S> = ObservedRead<S, FrameCounter>;

impl<S> FrameMeter<S> {
    pub fn new(inner: S) -> (Self, FloodAlarm) {
        let (counter, alarm) = FrameCounter::new();
        (ObservedRead::with(inner, counter), alarm)
    }
}

/// Parses frame headers out of the bytes h2 reads; see the module doc.
pub struct FrameCounter {
    alarm: FloodAlarm,
    buckets: Buckets,
    /// Preface bytes still to pass.
    preface_left: usize,
    header: [u8; FRAME_HEADER_BYTES],
    header_len: usize,
    /// Payload bytes of the current frame still to pass.
    payload_left: usize,
}

impl FrameCounter {
    pub fn new() -> (Self, FloodAlarm) {
        let alarm = FloodAlarm::default();
        let counter = Self {
            alarm: alarm.clone(),
            buckets: Buckets::new(),
            preface_left: PREFACE_BYTES,
            header: [0; FRAME_HEADER_BYTES],
            header_len: 0,
            payload_left: 0,
        };
        (counter, alarm)
    }
}

impl ReadObserver for FrameCounter {
    // Tripped: nothing more from this peer is read; the driver ends the connection.
    fn stop_reading(&self) -> bool {
        self.alarm.tripped().is_some()
    }

    fn observe(&mut self, mut bytes: &[u8]) {
        let now = Instant::now();
        while !bytes.is_empty() {
            if self.preface_left > 0 {
                let n = self.preface_left.min(bytes.len());
                self.preface_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER_BYTES - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len < FRAME_HEADER_BYTES {
                return;
            }
            self.header_len = 0;
            let h = self.header;
            let length = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
            self.payload_left = length;
            if let Some((frame, bucket)) = self.buckets.of(h[3], h[4], length) {
                if !bucket.try_take_at(now) {
                    self.alarm.trip(frame);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_ping_flood_trips_and_a_normal_exchange_does_not() {
        let (mut meter, alarm) = FrameCounter::new();
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(0x4, 0, &[0; 6]));
        bytes.extend(frame(0x1, 0x4, &[0x82, 0x87, 0x84]));
        bytes.extend(frame(0x0, 0x1, &[1; 100]));
        // Byte by byte, so that headers split over reads are parsed too.
        for b in &bytes {
            meter.observe(std::slice::from_ref(b));
        }
        assert_eq!(alarm.tripped(), None);
        let ping = frame(0x6, 0, &[0; 8]);
        for _ in 0..H2_PING_BURST_COUNT + 5 {
            meter.observe(&ping);
        }
        assert_eq!(alarm.tripped(), Some(FloodFrame::Ping));
    }
}
