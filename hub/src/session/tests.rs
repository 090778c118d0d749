//! The session over channels: what a client sees, and that every ending
//! ends the session, without a socket.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use clap::Parser;
use exechub_protocol::ServerMsg;
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::PollSender;

use super::*;
use crate::config::Cli;

/// A read error of the test transport: the socket is dead.
#[derive(Debug)]
struct Broken;

impl ReadError for Broken {
    fn ending(&self) -> Ending {
        Ending::Gone
    }
}

/// One end of a session under test.
struct Client {
    to_hub: mpsc::Sender<Result<Message, Broken>>,
    from_hub: mpsc::Receiver<Message>,
    session: JoinHandle<()>,
}

impl Client {
    async fn send(&self, frame: &str) {
        self.to_hub
            .send(Ok(Message::Text(frame.into())))
            .await
            .expect("the session reads");
    }

    async fn next(&mut self) -> Message {
        tokio::time::timeout(Duration::from_secs(60), self.from_hub.recv())
            .await
            .expect("a frame in time")
            .expect("the session writes")
    }

    async fn next_msg(&mut self) -> ServerMsg {
        match self.next().await {
            Message::Text(text) => serde_json::from_str(text.as_str()).expect("a server message"),
            other => panic!("not a text frame: {other:?}"),
        }
    }

    async fn ended(self) {
        tokio::time::timeout(Duration::from_secs(60), self.session)
            .await
            .expect("the session ended in time")
            .expect("the session did not panic");
    }
}

async fn app(args: &[&str]) -> AppState {
    let mut argv = vec!["exechub"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("valid flags");
    AppState::new(cli.config).await.expect("state")
}

/// Both halves of a WebSocket, over channels.
struct Duplex {
    incoming: mpsc::Receiver<Result<Message, Broken>>,
    outgoing: PollSender<Message>,
}

impl Stream for Duplex {
    type Item = Result<Message, Broken>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx)
    }
}

impl Sink<Message> for Duplex {
    type Error = tokio_util::sync::PollSendError<Message>;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.outgoing.poll_ready_unpin(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        self.outgoing.start_send_unpin(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.outgoing.poll_flush_unpin(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.outgoing.poll_close_unpin(cx)
    }
}

type Channels = (
    Duplex,
    mpsc::Sender<Result<Message, Broken>>,
    mpsc::Receiver<Message>,
);

fn duplex() -> Channels {
    let (to_hub, incoming) = mpsc::channel(16);
    let (outgoing, from_hub) = mpsc::channel(1024);
    let socket = Duplex {
        incoming,
        outgoing: PollSender::new(outgoing),
    };
    (socket, to_hub, from_hub)
}

fn caller() -> Caller {
    Caller {
        grant: Grant::unrestricted(),
        client: ClientKey::connection(),
        conn_id: 1,
    }
}

/// A queue the session drains through its socket (these sockets are channels).
fn outbox(app: &AppState) -> Arc<Outbox<Message>> {
    Arc::new(Outbox::new(app.config.outbox_limits()))
}

fn connect(app: &AppState) -> Client {
    let (socket, to_hub, from_hub) = duplex();
    let session = tokio::spawn(run(app.clone(), caller(), socket, outbox(app)));
    Client {
        to_hub,
        from_hub,
        session,
    }
}

#[tokio::test]
async fn subscribe_publish_and_unsubscribe_is_final() {
    let app = app(&[]).await;
    let mut client = connect(&app);
    client
        .send(r#"{"op":"subscribe","id":1,"execution_id":"s1","after":0}"#)
        .await;
    assert!(matches!(
        client.next_msg().await,
        ServerMsg::Subscribed { after: 0, .. }
    ));
    client
        .send(r#"{"op":"publish","id":2,"execution_id":"s1","event_type":"t","data":{}}"#)
        .await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        match client.next_msg().await {
            ServerMsg::Ack { seq, .. } => seen.push(format!("ack {seq}")),
            ServerMsg::Event { event, epoch } => {
                assert!(epoch.is_some());
                seen.push(format!("event {}", event.seq));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    seen.sort();
    assert_eq!(seen, ["ack 1", "event 1"]);
    client
        .send(r#"{"op":"unsubscribe","id":3,"execution_id":"s1"}"#)
        .await;
    assert!(matches!(
        client.next_msg().await,
        ServerMsg::Unsubscribed { .. }
    ));
    client
        .send(r#"{"op":"publish","id":4,"execution_id":"s1","event_type":"t","data":{}}"#)
        .await;
    assert!(matches!(
        client.next_msg().await,
        ServerMsg::Ack { seq: 2, .. }
    ));
    assert_eq!(app.feeds.subscriptions(), 0);
}

#[tokio::test]
async fn a_close_frame_is_echoed_and_ends_the_session() {
    let app = app(&[]).await;
    let mut client = connect(&app);
    client
        .send(r#"{"op":"subscribe","id":1,"execution_id":"s2"}"#)
        .await;
    assert!(matches!(
        client.next_msg().await,
        ServerMsg::Subscribed { .. }
    ));
    client
        .to_hub
        .send(Ok(Message::Close(None)))
        .await
        .expect("reads");
    client.ended().await;
    assert_eq!((app.feeds.subscriptions(), app.feeds.active()), (0, 0));
}

#[tokio::test]
async fn a_vanished_client_ends_the_session_and_frees_its_subscriptions() {
    let app = app(&[]).await;
    let mut client = connect(&app);
    for id in ["a", "b", "c"] {
        let frame = format!(r#"{{"op":"subscribe","execution_id":"{id}"}}"#);
        client.send(&frame).await;
        assert!(matches!(
            client.next_msg().await,
            ServerMsg::Subscribed { .. }
        ));
    }
    assert_eq!(app.feeds.subscriptions(), 3);
    client.to_hub.send(Err(Broken)).await.expect("reads");
    client.ended().await;
    assert_eq!((app.feeds.subscriptions(), app.feeds.active()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_pinged_then_closed_with_4003() {
    let app = app(&["--ping-interval", "10s", "--ping-timeout", "5s"]).await;
    let mut client = connect(&app);
    assert!(matches!(client.next().await, Message::Ping(_)));
    match client.next().await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), close::PING_TIMEOUT),
        other => panic!("expected a close frame, got {other:?}"),
    }
    client.ended().await;
}

#[tokio::test(start_paused = true)]
async fn an_answering_client_is_kept() {
    let app = app(&["--ping-interval", "10s", "--ping-timeout", "5s"]).await;
    let mut client = connect(&app);
    for _ in 0..3 {
        assert!(matches!(client.next().await, Message::Ping(_)));
        client
            .to_hub
            .send(Ok(Message::Pong(bytes::Bytes::new())))
            .await
            .expect("reads");
    }
    assert!(!client.session.is_finished());
}

/// A connection's task stays small: it is what an idle connection costs
/// besides its socket (see `exechub-bench idle`).
#[tokio::test]
async fn an_idle_connection_task_is_small() {
    let app = app(&[]).await;
    let (socket, _to_hub, _from_hub) = duplex();
    let outbox = outbox(&app);
    let task = run(app, caller(), socket, outbox);
    let size = std::mem::size_of_val(&task);
    // 1 KiB, and 8 bytes of `conn_id` for the close's log line.
    assert!(size <= 1032, "the session future is {size} bytes");
}
