//! The way from the gRPC thread (tokio) to the priority executor (glommio), where
//! `ApiCtx` lives, and back. A bounded queue of calls (futures' channels wake either
//! runtime); a task on the priority executor takes each call and answers it through
//! `api::routes::route`, as the HTTP API does. A whole answer comes back in one piece; a
//! streamed one (watch) chunk by chunk over a small bounded channel, so a slow gRPC
//! reader holds the producer back instead of growing a buffer, and a reader that leaves
//! ends the producer at once (not at its next chunk).

use std::rc::Rc;

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::{FutureExt, SinkExt, StreamExt};
use http::StatusCode;

use crate::api::routes::{self, ApiCall, ApiError};
use crate::api::{ApiBody, ApiCtx};
use crate::limits::{GRPC_CALL_QUEUE_COUNT, GRPC_STREAM_CHUNKS_QUEUED_COUNT};

/// One call and where its answer goes.
struct Job {
    call: ApiCall,
    reply: oneshot::Sender<Answer>,
}

/// A route's answer as the gRPC side gets it.
pub struct Answer {
    pub status: StatusCode,
    pub body: AnswerBody,
}

pub enum AnswerBody {
    Whole(Bytes),
    /// Chunks as the route streams them; an `Err` ends the answer early (the route's
    /// reader failed). Dropping this ends the producer.
    Streamed(StreamedBody),
}

/// A streamed answer's chunks, and the wire that tells the producer its reader left.
pub struct StreamedBody {
    pub chunks: mpsc::Receiver<Result<Bytes, String>>,
    /// Dropped with the body: the producer's `gone` wakes and it stops.
    _reading: oneshot::Sender<()>,
}

/// Why a call got no answer from the priority executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    #[error("the API is busy: too many calls are waiting; retry shortly")]
    Busy,
    #[error("the frontend is stopping")]
    Stopped,
}

/// The gRPC thread's end: cheap to clone.
#[derive(Clone)]
pub struct CallQueue {
    tx: mpsc::Sender<Job>,
}

/// The priority executor's end.
pub struct CallReceiver {
    rx: mpsc::Receiver<Job>,
}

pub fn call_queue() -> (CallQueue, CallReceiver) {
    let (tx, rx) = mpsc::channel(GRPC_CALL_QUEUE_COUNT);
    (CallQueue { tx }, CallReceiver { rx })
}

impl CallQueue {
    /// Routes `call` on the priority executor and waits for its answer's start.
    pub async fn call(&self, call: ApiCall) -> Result<Answer, BridgeError> {
        let (reply, answer) = oneshot::channel();
        let mut tx = self.tx.clone();
        tx.try_send(Job { call, reply }).map_err(|e| {
            if e.is_full() {
                BridgeError::Busy
            } else {
                BridgeError::Stopped
            }
        })?;
        answer.await.map_err(|_| BridgeError::Stopped)
    }
}

/// Runs on the priority executor: answers every call the gRPC thread queues, each in a
/// task of its own, until the queue's senders are gone.
pub async fn serve_calls(ctx: Rc<ApiCtx>, mut calls: CallReceiver) {
    while let Some(job) = calls.rx.next().await {
        glommio::spawn_local(answer(ctx.clone(), job)).detach();
    }
}

async fn answer(ctx: Rc<ApiCtx>, job: Job) {
    let Job { call, reply } = job;
    let cap = routes::body_cap_bytes(&call.segments());
    let result = if call.body.len() > cap {
        Err(ApiError::TooLarge { max_bytes: cap })
    } else {
        routes::route(&ctx, &call).await
    };
    let response = match result {
        Ok(response) => response,
        Err(e) => {
            let body = serde_json::json!({ "error": e.to_string() });
            let _ = reply.send(Answer {
                status: e.status(),
                body: AnswerBody::Whole(Bytes::from(body.to_string())),
            });
            return;
        }
    };
    let status = response.status();
    let stream: std::pin::Pin<Box<dyn futures::Stream<Item = Result<Bytes, String>> + Send>> =
        match response.into_body() {
            ApiBody::Whole(full) => {
                let bytes = match http_body_util::BodyExt::collect(full).await {
                    Ok(collected) => collected.to_bytes(),
                    Err(never) => match never {},
                };
                let _ = reply.send(Answer {
                    status,
                    body: AnswerBody::Whole(bytes),
                });
                return;
            }
            ApiBody::Streamed(stream) => Box::pin(stream.map(Ok)),
            ApiBody::Fallible(stream) => Box::pin(stream.map(|r| r.map_err(|e| e.to_string()))),
        };
    let (mut chunks_tx, chunks) = mpsc::channel(GRPC_STREAM_CHUNKS_QUEUED_COUNT);
    let (reading, gone) = oneshot::channel::<()>();
    let body = AnswerBody::Streamed(StreamedBody {
        chunks,
        _reading: reading,
    });
    if reply.send(Answer { status, body }).is_err() {
        return;
    }
    forward(stream, &mut chunks_tx, gone).await;
}

/// Sends the stream's chunks until it ends, fails, or the reader leaves.
async fn forward(
    mut stream: std::pin::Pin<Box<dyn futures::Stream<Item = Result<Bytes, String>> + Send>>,
    chunks: &mut mpsc::Sender<Result<Bytes, String>>,
    gone: oneshot::Receiver<()>,
) {
    let mut gone = gone.fuse();
    loop {
        let next = futures::select! {
            next = stream.next().fuse() => next,
            _ = gone => return,
        };
        let Some(chunk) = next else {
            return;
        };
        let failed = chunk.is_err();
        let sent = futures::select! {
            sent = chunks.send(chunk).fuse() => sent,
            _ = gone => return,
        };
        if sent.is_err() || failed {
            return;
        }
    }
}
