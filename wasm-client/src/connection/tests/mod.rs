//! The state machine driven by hand: handlers are names, promises numbers,
//! frames the protocol's own types (as the hub's decoder and encoder see them).

use std::time::Duration;

use exechub_protocol::backoff::Backoff;
use exechub_protocol::{
    ClientMsg, ErrorCode, Event, EventData, LostReason, PublishRequest, RequestId, ServerMsg,
};

use super::machine::reconnects_after;
use super::*;
use crate::error::ClientError;

mod lifecycle;

type Machine = Connection<&'static str, u32>;
type Act = Action<&'static str, u32>;

const E1: &str = "9f2c41d07a3b5e11";
const E2: &str = "5d0e2b7c91aa4f30";

fn machine() -> Machine {
    Connection::new(Backoff {
        first: Duration::from_millis(100),
        max: Duration::from_secs(2),
    })
}

fn open() -> Machine {
    let mut machine = machine();
    machine.connecting();
    machine.opened();
    machine
}

fn event(id: &str, seq: u64) -> Event {
    Event {
        seq,
        execution_id: id.into(),
        event_type: "log".into(),
        timestamp: "2026-11-28T14:03:07.123Z".into(),
        data: EventData::new(),
    }
}

fn event_msg(id: &str, epoch: &str, seq: u64) -> ServerMsg {
    ServerMsg::Event {
        epoch: Some(epoch.into()),
        event: event(id, seq),
    }
}

fn request(event_type: &str) -> PublishRequest {
    PublishRequest {
        event_type: event_type.into(),
        data: EventData::new(),
        timestamp: None,
    }
}

fn ack(id: u64, seq: u64, first_seq: Option<u64>) -> ServerMsg {
    ServerMsg::Ack {
        id: Some(RequestId::Num(id)),
        execution_id: "e".into(),
        seq,
        first_seq,
        timestamp: "t".into(),
    }
}

/// The frames among `actions`, as the hub reads them off the wire.
fn sent(actions: &[Act]) -> Vec<ClientMsg> {
    let frames = actions.iter().filter_map(|action| match action {
        Action::Send(msg) => Some(msg),
        _ => None,
    });
    frames.map(on_the_wire).collect()
}

/// `msg` written as JSON and read back by the hub's decoder.
fn on_the_wire(msg: &ClientMsg) -> ClientMsg {
    let text = serde_json::to_string(msg).expect("serializes");
    ClientMsg::decode(&text).expect("the hub decodes the frame")
}

fn delivered(actions: &[Act]) -> Vec<u64> {
    let seqs = actions.iter().filter_map(|action| match action {
        Action::Deliver(_, event) => Some(event.seq),
        _ => None,
    });
    seqs.collect()
}

fn subscribe_msg(id: u64, after: Option<u64>, epoch: Option<&str>) -> ClientMsg {
    ClientMsg::Subscribe {
        id: Some(RequestId::Num(id)),
        execution_id: "e".into(),
        after,
        epoch: epoch.map(Into::into),
    }
}

#[test]
fn subscriptions_are_sent_on_open_and_resent_from_their_position_after_a_drop() {
    let mut machine = machine();
    assert_eq!(
        machine.connecting(),
        [Act::State(ConnectionState::Connecting)]
    );
    let actions = machine
        .subscribe("e".into(), Some(2), "on-e")
        .expect("subscribed");
    assert!(
        actions.is_empty(),
        "nothing is sent before the socket opens"
    );
    let actions = machine.opened();
    assert_eq!(actions[0], Act::State(ConnectionState::Open));
    assert_eq!(sent(&actions), [subscribe_msg(1, Some(2), None)]);

    machine.received(ServerMsg::Subscribed {
        id: Some(RequestId::Num(1)),
        execution_id: "e".into(),
        after: 2,
        epoch: Some(E1.into()),
    });
    let actions: Vec<Act> = (3..=4)
        .flat_map(|seq| machine.received(event_msg("e", E1, seq)))
        .collect();
    assert_eq!(delivered(&actions), [3, 4]);
    assert_eq!(machine.last_seq("e"), Some(4));

    let (actions, delay) = machine.dropped(1006, 1.0);
    assert_eq!(actions, [Act::State(ConnectionState::Reconnecting)]);
    assert_eq!(delay, Some(Duration::from_millis(100)));
    assert_eq!(
        sent(&machine.opened()),
        [subscribe_msg(2, Some(4), Some(E1))]
    );
    // The replay overlaps what was delivered: each seq reaches the handler once.
    let actions: Vec<Act> = (3..=5)
        .flat_map(|seq| machine.received(event_msg("e", E1, seq)))
        .collect();
    assert_eq!(delivered(&actions), [5]);
}

#[test]
fn a_lost_history_is_announced_before_the_new_histories_events() {
    let mut machine = open();
    machine
        .subscribe("e".into(), Some(0), "on-e")
        .expect("subscribed");
    let mut actions: Vec<Act> = (1..=3)
        .flat_map(|seq| machine.received(event_msg("e", E1, seq)))
        .collect();
    // Unannounced, another history's event is not delivered.
    actions.extend(machine.received(event_msg("e", E2, 1)));
    assert_eq!(delivered(&actions), [1, 2, 3]);
    let lost = HistoryLost {
        execution_id: "e".into(),
        after: 3,
        resume_after: 0,
        reason: LostReason::Expired,
        epoch: Some(E2.into()),
    };
    let actions = machine.received(ServerMsg::HistoryLost {
        execution_id: "e".into(),
        after: 3,
        resume_after: 0,
        reason: LostReason::Expired,
        epoch: Some(E2.into()),
    });
    assert_eq!(actions, [Act::Lost("on-e", lost)]);
    let actions: Vec<Act> = (1..=2)
        .flat_map(|seq| machine.received(event_msg("e", E2, seq)))
        .collect();
    assert_eq!(delivered(&actions), [1, 2]);
    // Resubscribing names the new history.
    machine.dropped(1001, 0.0);
    assert_eq!(
        sent(&machine.opened()),
        [subscribe_msg(2, Some(2), Some(E2))]
    );
}

#[test]
fn unsubscribe_stops_delivery_and_tells_the_hub_when_connected() {
    let mut machine = open();
    machine
        .subscribe("e".into(), Some(0), "on-e")
        .expect("subscribed");
    let actions = machine.unsubscribe("e");
    assert_eq!(
        sent(&actions),
        [ClientMsg::Unsubscribe {
            id: Some(RequestId::Num(2)),
            execution_id: "e".into()
        }]
    );
    assert!(machine.received(event_msg("e", E1, 1)).is_empty());
    assert!(machine.unsubscribe("e").is_empty());
    machine
        .subscribe("e".into(), None, "again")
        .expect("a new subscription after unsubscribing");
}

#[test]
fn subscribing_twice_or_to_a_bad_id_or_when_closed_is_refused() {
    let mut machine = machine();
    machine.subscribe("e".into(), None, "a").expect("first");
    let twice = machine.subscribe("e".into(), None, "b");
    assert_eq!(
        twice.err(),
        Some(ClientError::AlreadySubscribed("e".into()))
    );
    let bad = machine
        .subscribe("a{b}".into(), None, "c")
        .expect_err("bad id");
    assert_eq!(bad.code(), "invalid_request");
    machine.close();
    let closed = machine.subscribe("f".into(), None, "d");
    assert_eq!(closed.err(), Some(ClientError::Closed));
}

#[test]
fn publishes_settle_with_their_ack_and_batches_with_both_seqs() {
    let mut machine = open();
    let actions = machine.publish("e".into(), Publish::One(request("a")), None, 7);
    let key = Some("job-1".to_owned());
    let batch = Publish::Batch(vec![request("b"), request("c")]);
    let batch_actions = machine.publish("e".into(), batch, key.clone(), 8);
    assert_eq!(
        sent(&actions),
        [ClientMsg::Publish {
            id: Some(RequestId::Num(1)),
            execution_id: "e".into(),
            event: request("a"),
            idempotency_key: None,
        }]
    );
    assert_eq!(
        sent(&batch_actions),
        [ClientMsg::PublishBatch {
            id: Some(RequestId::Num(2)),
            execution_id: "e".into(),
            events: vec![request("b"), request("c")],
            idempotency_key: key,
        }]
    );
    // Answers may come in any order; an unknown id settles nothing.
    let stored = |first, last| Ok(Stored { first, last });
    assert_eq!(
        machine.received(ack(2, 3, Some(2))),
        [Act::Settle(8, stored(2, 3))]
    );
    assert_eq!(
        machine.received(ack(1, 1, None)),
        [Act::Settle(7, stored(1, 1))]
    );
    assert!(machine.received(ack(1, 1, None)).is_empty());
}

#[test]
fn hub_errors_reject_their_publish_or_reach_their_subscription() {
    let mut machine = open();
    machine
        .subscribe("e".into(), None, "on-e")
        .expect("subscribed");
    machine.publish("e".into(), Publish::One(request("a")), None, 1);
    let error = |id: Option<u64>, execution_id: Option<&str>| ServerMsg::Error {
        id: id.map(RequestId::Num),
        code: ErrorCode::Unavailable,
        message: "store down".into(),
        execution_id: execution_id.map(Into::into),
        detail: None,
    };
    let hub = ClientError::Hub {
        code: ErrorCode::Unavailable,
        message: "store down".into(),
        detail: None,
    };
    assert_eq!(
        machine.received(error(Some(2), Some("e"))),
        [Act::Settle(1, Err(hub.clone()))]
    );
    assert_eq!(
        machine.received(error(Some(1), Some("e"))),
        [Act::Failed("on-e", hub)]
    );
    assert!(machine.received(error(None, None)).is_empty());
}

#[test]
fn nothing_is_queued_while_disconnected() {
    let mut machine = machine();
    let actions = machine.publish("e".into(), Publish::One(request("a")), None, 1);
    assert_eq!(actions, [Act::Settle(1, Err(ClientError::NotConnected))]);
    machine.opened();
    machine.publish("e".into(), Publish::One(request("a")), None, 2);
    let (actions, _) = machine.dropped(1006, 0.5);
    assert_eq!(
        actions,
        [
            Act::Settle(2, Err(ClientError::ConnectionLost)),
            Act::State(ConnectionState::Reconnecting)
        ]
    );
    let actions = machine.publish("e".into(), Publish::One(request("a")), None, 3);
    assert_eq!(actions, [Act::Settle(3, Err(ClientError::NotConnected))]);
}

#[test]
fn close_fails_what_is_pending_and_ends_every_loop() {
    let mut machine = open();
    machine.publish("e".into(), Publish::One(request("a")), None, 1);
    assert_eq!(
        machine.close(),
        [
            Act::Settle(1, Err(ClientError::Closed)),
            Act::State(ConnectionState::Closed)
        ]
    );
    assert!(machine.close().is_empty(), "closing twice reports nothing");
    assert_eq!(machine.dropped(1006, 0.0), (Vec::new(), None));
    assert!(machine.opened().is_empty());
    assert!(machine.received(event_msg("e", E1, 1)).is_empty());
    let actions = machine.publish("e".into(), Publish::One(request("a")), None, 2);
    assert_eq!(actions, [Act::Settle(2, Err(ClientError::Closed))]);
}

#[test]
fn the_hub_can_say_not_to_reconnect() {
    let mut machine = open();
    let (actions, delay) = machine.dropped(4500, 0.0);
    assert_eq!(actions, [Act::State(ConnectionState::Closed)]);
    assert_eq!(delay, None);
    for code in [1000, 1001, 1006, 1011, 4001, 4002, 4499] {
        assert!(reconnects_after(code), "{code}");
    }
    for code in [1002, 1008, 4500, 4999] {
        assert!(!reconnects_after(code), "{code}");
    }
}

#[test]
fn reconnect_delays_grow_to_the_cap_with_jitter_and_reset_on_open() {
    let mut machine = machine();
    let mut delays = Vec::new();
    for _ in 0..7 {
        delays.push(machine.dropped(1006, 1.0).1.expect("retry").as_millis());
    }
    assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
    // Equal jitter: never under half the ceiling.
    assert_eq!(
        machine.dropped(1006, 0.0).1,
        Some(Duration::from_millis(1000))
    );
    machine.opened();
    assert_eq!(
        machine.dropped(1006, 1.0).1,
        Some(Duration::from_millis(100))
    );
}

#[test]
fn fresh_tokens_go_out_on_the_open_socket_only() {
    let mut machine = machine();
    assert!(machine.token_refreshed("t1".into()).is_empty());
    machine.opened();
    assert_eq!(
        sent(&machine.token_refreshed("t2".into())),
        [ClientMsg::Auth {
            id: Some(RequestId::Num(1)),
            token: "t2".into()
        }]
    );
}

#[test]
fn frames_the_hub_sends_decode_into_what_the_machine_reads() {
    // Frames as docs/protocol.md shows them.
    let frames = [
        r#"{"type":"subscribed","id":1,"execution_id":"e","after":2,"epoch":"9f2c41d07a3b5e11"}"#,
        r#"{"type":"event","epoch":"9f2c41d07a3b5e11","event":{"seq":3,"execution_id":"e","event_type":"tool_started","timestamp":"2026-11-28T14:03:07.123Z","data":{"tool":"grep"}}}"#,
        r#"{"type":"history_lost","execution_id":"e","after":3,"resume_after":0,"reason":"expired","epoch":"5d0e2b7c91aa4f30"}"#,
        r#"{"type":"event","epoch":"5d0e2b7c91aa4f30","event":{"seq":1,"execution_id":"e","event_type":"log","timestamp":"t","data":{}}}"#,
    ];
    let mut machine = open();
    machine
        .subscribe("e".into(), Some(2), "on-e")
        .expect("subscribed");
    let actions: Vec<Act> = frames
        .iter()
        .map(|text| serde_json::from_str::<ServerMsg>(text).expect("decodes"))
        .flat_map(|msg| machine.received(msg))
        .collect();
    assert_eq!(delivered(&actions), [3, 1]);
    assert!(matches!(&actions[1], Act::Lost(_, lost) if lost.reason == LostReason::Expired));
    let Act::Deliver(_, first) = &actions[0] else {
        panic!("an event first")
    };
    assert_eq!(first.data["tool"], "grep");
}

#[test]
fn busy_while_a_subscription_a_list_or_a_publish_waits() {
    let mut machine = open();
    assert!(!machine.is_busy(), "a new client waits on nothing");
    machine.publish("e".into(), Publish::One(request("a")), None, 1);
    assert!(machine.is_busy(), "a publish awaits its ack");
    machine.received(ack(1, 1, None));
    assert!(!machine.is_busy(), "the ack settled it");

    machine
        .subscribe(E1.into(), Some(0), "h")
        .expect("subscribed");
    assert!(machine.is_busy(), "a subscription waits for events");
    machine.received(ServerMsg::Ended {
        execution_id: E1.into(),
        status: "completed".into(),
        seq: 3,
    });
    assert!(!machine.is_busy(), "its execution ended");

    let (key, _) = machine
        .subscribe_executions(exechub_protocol::StatusFilter::All, "list")
        .expect("list");
    assert!(machine.is_busy(), "a list subscription waits for changes");
    machine.unsubscribe_executions(key);
    assert!(!machine.is_busy());

    machine.subscribe(E2.into(), None, "h").expect("subscribed");
    machine.close();
    assert!(!machine.is_busy(), "a closed client waits on nothing");
}
