//! The session over channels: what a client sees, and that every ending
//! ends the session, without a socket.

use std::time::Duration;

use clap::Parser;
use exechub_protocol::ServerMsg;
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

fn connect(app: &AppState) -> Client {
    let (to_hub, incoming) = mpsc::channel(16);
    let (outgoing, from_hub) = mpsc::channel(1024);
    let mut incoming = incoming;
    let stream = futures_util::stream::poll_fn(move |cx| incoming.poll_recv(cx));
    let sink = PollSender::new(outgoing);
    let session = tokio::spawn(run(
        app.clone(),
        Grant::unrestricted(),
        sink,
        Box::pin(stream),
    ));
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
        Message::Close(Some(frame)) => assert_eq!(frame.code, close::PING_TIMEOUT),
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
