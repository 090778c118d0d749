//! Executions that end, and the list of executions, through the state
//! machine: `ended` ends a subscription for good; list subscriptions share
//! the hub's one follow and get their part of each snapshot and change.

use exechub_protocol::{ExecutionSummary, StatusFilter};

use super::*;

fn summary(id: &str, status: &str) -> ExecutionSummary {
    let ended = status != "running";
    ExecutionSummary {
        execution_id: id.into(),
        status: status.into(),
        ended,
        epoch: Some(E1.into()),
        first_seq: 1,
        last_seq: 3,
        events: 3,
        started_at: "t".into(),
        updated_at: "t".into(),
        ended_at: ended.then(|| "t".into()),
        final_event: ended.then(|| event(id, 3)),
    }
}

fn list_msg(id: u64, status: StatusFilter) -> ClientMsg {
    ClientMsg::SubscribeExecutions {
        id: Some(RequestId::Num(id)),
        status,
    }
}

#[test]
fn an_ended_execution_ends_its_subscription_once_and_for_good() {
    let mut machine = open();
    machine
        .subscribe("e".into(), Some(0), "on-e")
        .expect("subscribed");
    machine.received(event_msg("e", E1, 1));
    let ended = ServerMsg::Ended {
        execution_id: "e".into(),
        status: "completed".into(),
        seq: 1,
    };
    let expected = Ended {
        execution_id: "e".into(),
        status: "completed".into(),
        seq: 1,
    };
    assert_eq!(
        machine.received(ended.clone()),
        [Act::Ended("on-e", expected)]
    );
    assert_eq!(machine.received(ended), [], "told once");
    assert_eq!(
        delivered(&machine.received(event_msg("e", E1, 2))),
        [] as [u64; 0]
    );
    // Not resumed after a reconnect, and free to subscribe again.
    machine.dropped(1006, 0.5);
    assert_eq!(sent(&machine.opened()), []);
    assert!(machine.subscribe("e".into(), Some(0), "again").is_ok());
    assert_eq!(machine.unsubscribe("other"), []);
}

#[test]
fn a_publish_after_the_end_is_refused_with_its_code() {
    let mut machine = open();
    machine.publish("e".into(), Publish::One(request("log")), None, 7);
    let refusal = r#"{"type":"error","id":1,"code":"execution_ended","message":"execution e has ended","execution_id":"e"}"#;
    let actions = machine.received(serde_json::from_str(refusal).expect("decodes"));
    let [Act::Settle(7, Err(error))] = actions.as_slice() else {
        panic!("the publish is rejected: {actions:?}")
    };
    assert_eq!(error.code(), "execution_ended");
}

#[test]
fn list_subscriptions_share_one_follow_and_get_their_part() {
    let mut machine = machine();
    machine.connecting();
    let (running, actions) = machine
        .subscribe_executions(StatusFilter::Running, "running")
        .expect("subscribed");
    assert!(
        actions.is_empty(),
        "nothing is sent before the socket opens"
    );
    assert_eq!(
        sent(&machine.opened()),
        [list_msg(1, StatusFilter::Running)]
    );
    // A second filter widens what the hub follows; a fresh snapshot serves both.
    let (_, actions) = machine
        .subscribe_executions(StatusFilter::Ended, "ended")
        .expect("subscribed");
    assert_eq!(sent(&actions), [list_msg(2, StatusFilter::All)]);
    let snapshot = ServerMsg::Executions {
        id: Some(RequestId::Num(2)),
        executions: vec![summary("a", "running"), summary("b", "failed")],
    };
    assert_eq!(
        machine.received(snapshot),
        [
            Act::Listed("running", vec![summary("a", "running")]),
            Act::Listed("ended", vec![summary("b", "failed")]),
        ]
    );
    // An execution that ends leaves the running list and joins the ended one.
    let change = ServerMsg::Execution {
        execution: Box::new(summary("a", "completed")),
    };
    let reached: Vec<&str> = machine
        .received(change)
        .iter()
        .filter_map(|action| match action {
            Act::Changed(list, _) => Some(*list),
            _ => None,
        })
        .collect();
    assert_eq!(reached, ["running", "ended"]);
    // Resubscribed after a reconnect; the hub stops following with the last one.
    machine.dropped(1006, 0.5);
    assert_eq!(sent(&machine.opened()), [list_msg(3, StatusFilter::All)]);
    assert_eq!(machine.unsubscribe_executions(running), []);
    assert_eq!(
        sent(&machine.unsubscribe_executions(2)),
        [ClientMsg::UnsubscribeExecutions {
            id: Some(RequestId::Num(4))
        }]
    );
    assert_eq!(machine.unsubscribe_executions(2), [], "once");
}

#[test]
fn a_refused_list_follow_reaches_every_list_subscription() {
    let mut machine = open();
    machine
        .subscribe_executions(StatusFilter::All, "list")
        .expect("subscribed");
    let refusal = ServerMsg::Error {
        id: Some(RequestId::Num(1)),
        code: ErrorCode::Forbidden,
        message: "no".into(),
        execution_id: None,
        detail: None,
    };
    let actions = machine.received(refusal);
    assert!(
        matches!(actions.as_slice(), [Act::ListFailed("list", error)] if error.code() == "forbidden")
    );
    machine.close();
    assert_eq!(
        machine
            .subscribe_executions(StatusFilter::All, "late")
            .err(),
        Some(ClientError::Closed)
    );
}
