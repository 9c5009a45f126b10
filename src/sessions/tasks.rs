//! The push channel: one long-lived response per agent that streams `ServerMessage`
//! frames. Opening it registers the agent on this shard, announces its presence, and
//! delivers every task queued on disk while it was away.

use std::rc::Rc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::future::{self, Either};
use futures::pin_mut;
use h2::server::SendResponse;

use crate::datastore::{flow, Datastore, DatastoreError};
use crate::ids::{ClientId, FlowId};
use crate::metrics::metrics;
use crate::notify::mesh::ShardEvent;
use crate::protocol::{framing, pb};
use crate::runtime::offload::offload;
use crate::sessions::shard::ShardCtx;

/// Builds the task frame for a queued flow from its request.json. Blocking: run it
/// through `offload`.
pub fn task_frame(
    datastore: &Datastore,
    client_id: &ClientId,
    flow_id: &FlowId,
) -> Result<Bytes, DatastoreError> {
    let client = datastore.client(client_id);
    Ok(crate::protocol::tasks::task_frame(
        flow::read_request(&client, flow_id)?.into_task(),
    ))
}

/// Pushes a flow to the client if it is connected to this shard: `frame` when the
/// scheduler sent it along (no disk read), else built from request.json.
pub async fn deliver(ctx: &ShardCtx, client_id: &ClientId, flow_id: &FlowId, frame: Option<Bytes>) {
    if !ctx.sessions.is_connected(client_id) {
        return;
    }
    if let Some(frame) = frame {
        return push(ctx, client_id, flow_id, frame);
    }
    let (datastore, client, flow) = (ctx.datastore.clone(), client_id.clone(), flow_id.clone());
    match offload(move || task_frame(&datastore, &client, &flow)).await {
        Ok(frame) => push(ctx, client_id, flow_id, frame),
        Err(e) => tracing::warn!(client = %client_id, flow = %flow_id, "cannot build task: {e}"),
    }
}

fn push(ctx: &ShardCtx, client_id: &ClientId, flow_id: &FlowId, frame: Bytes) {
    if ctx.sessions.push(client_id, flow_id, frame) {
        metrics().tasks_pushed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Serves `GET /agent/v1/tasks` until the agent goes away or the shard stops.
pub async fn serve_task_stream(
    ctx: Rc<ShardCtx>,
    client_id: ClientId,
    mut respond: SendResponse<Bytes>,
) {
    let session_id = ctx.next_session_id();
    let mut registration = ctx.sessions.register(&client_id, session_id);
    let connected = ShardEvent::Connected {
        client_id: client_id.clone(),
        shard: ctx.shard,
        session: session_id,
    };
    let _ = ctx.events.send(connected).await;

    let response = http::Response::builder()
        .status(200)
        .header("content-type", crate::protocol::CONTENT_TYPE)
        .body(())
        .expect("static response parts are valid");
    if let Ok(mut stream) = respond.send_response(response, false) {
        let hello = pb::Hello {
            client_id: client_id.to_string(),
            frontend: ctx.frontend_name.clone(),
        };
        let hello = framing::encode(&pb::ServerMessage {
            kind: Some(pb::server_message::Kind::Hello(hello)),
        });
        if stream.send_data(hello, false).is_ok() {
            deliver_pending(&ctx, &client_id).await;
            pump(&mut registration.frames, &mut stream).await;
        }
    }

    if ctx.sessions.unregister(&client_id, session_id) {
        let gone = ShardEvent::Disconnected {
            client_id,
            shard: ctx.shard,
            session: session_id,
        };
        let _ = ctx.events.send(gone).await;
    }
}

/// Pushes the tasks queued on disk for every agent connected to this shard (after
/// notifications may have been lost). Sequential: one directory listing at a time, so a
/// rescan of thousands of agents does not flood the blocking pool or the NFS server.
pub async fn rescan(ctx: &ShardCtx) {
    for client_id in ctx.sessions.client_ids() {
        if ctx.sessions.is_connected(&client_id) {
            deliver_pending(ctx, &client_id).await;
        }
    }
}

/// Tasks queued on disk while the agent was away (or before this stream registered).
async fn deliver_pending(ctx: &ShardCtx, client_id: &ClientId) {
    let (datastore, client) = (ctx.datastore.clone(), client_id.clone());
    let frames = offload(move || {
        let queued = flow::pending_tasks(&datastore.client(&client))?;
        let frames = queued
            .into_iter()
            .filter_map(|f| task_frame(&datastore, &client, &f).ok().map(|b| (f, b)));
        Ok::<_, DatastoreError>(frames.collect::<Vec<_>>())
    })
    .await;
    match frames {
        Ok(frames) => frames
            .into_iter()
            .for_each(|(flow_id, frame)| push(ctx, client_id, &flow_id, frame)),
        Err(e) => tracing::warn!(client = %client_id, "cannot list queued tasks: {e}"),
    }
}

/// Forwards frames until the registry closes the queue or the agent resets the stream.
async fn pump(
    frames: &mut futures::channel::mpsc::Receiver<Bytes>,
    stream: &mut h2::SendStream<Bytes>,
) {
    enum Event {
        Frame(Bytes),
        Closed,
        Reset,
    }
    loop {
        let event = {
            let next = futures::StreamExt::next(frames);
            let reset = future::poll_fn(|cx| stream.poll_reset(cx));
            pin_mut!(next, reset);
            match future::select(next, reset).await {
                Either::Left((Some(frame), _)) => Event::Frame(frame),
                Either::Left((None, _)) => Event::Closed,
                Either::Right(_) => Event::Reset,
            }
        };
        match event {
            Event::Frame(frame) => {
                if stream.send_data(frame, false).is_err() {
                    return;
                }
            }
            Event::Closed => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Event::Reset => return,
        }
    }
}
