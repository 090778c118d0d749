//! The JSON names of fields and message kinds, spelled once.
//!
//! The serde derives in this crate spell the same names (an attribute cannot
//! take a constant); the tests below check that the two agree. Code that reads
//! or writes JSON without the derives uses these constants: the hub's frame
//! decoder ([`ClientMsg::decode`](crate::ClientMsg::decode)) and its quick
//! publish readers, and the browser client's reading of error bodies.

/// Field names, in every message and body that has them.
pub mod field {
    /// The kind of a server frame, and of a validation problem.
    pub const TYPE: &str = "type";
    /// The operation of a client frame.
    pub const OP: &str = "op";
    /// The request id, echoed in the answer.
    pub const ID: &str = "id";
    /// The execution concerned.
    pub const EXECUTION_ID: &str = "execution_id";
    /// A position: replay (or resume) after this seq.
    pub const AFTER: &str = "after";
    /// `history_lost`: delivery continues after this seq.
    pub const RESUME_AFTER: &str = "resume_after";
    /// The identity of an execution's history: seqs are positions within it.
    pub const EPOCH: &str = "epoch";
    /// `history_lost`: why the position was lost.
    pub const REASON: &str = "reason";
    /// An event's position in its execution.
    pub const SEQ: &str = "seq";
    /// The event inside an `event` frame.
    pub const EVENT: &str = "event";
    /// What happened.
    pub const EVENT_TYPE: &str = "event_type";
    /// RFC 3339 time of an event.
    pub const TIMESTAMP: &str = "timestamp";
    /// An event's payload.
    pub const DATA: &str = "data";
    /// A publish's idempotency key.
    pub const IDEMPOTENCY_KEY: &str = "idempotency_key";
    /// An error's code.
    pub const CODE: &str = "code";
    /// An error's explanation.
    pub const MESSAGE: &str = "message";
    /// Validation problems (or, in a non-422 HTTP error body, a text).
    pub const DETAIL: &str = "detail";
    /// A history page's events, and a batch publish's.
    pub const EVENTS: &str = "events";
    /// A batch publish's answer: the first seq assigned.
    pub const FIRST_SEQ: &str = "first_seq";
    /// A history page's highest assigned seq.
    pub const LAST_SEQ: &str = "last_seq";
    /// A history page's lowest retained seq.
    pub const OLDEST_SEQ: &str = "oldest_seq";
    /// Where a validation problem is.
    pub const LOC: &str = "loc";
    /// A validation problem's message.
    pub const MSG: &str = "msg";
    /// The bearer token of an `auth` frame.
    pub const TOKEN: &str = "token";
    /// When an accepted token expires (Unix seconds).
    pub const EXPIRES_AT: &str = "expires_at";
    /// An execution's status (`ended`, a summary), or a list's status filter.
    pub const STATUS: &str = "status";
    /// The summaries of an `executions` frame.
    pub const EXECUTIONS: &str = "executions";
    /// The summary of an `execution` frame.
    pub const EXECUTION: &str = "execution";
}

/// Values of a client frame's `op`.
pub mod op {
    /// [`ClientMsg::Subscribe`](crate::ClientMsg::Subscribe).
    pub const SUBSCRIBE: &str = "subscribe";
    /// [`ClientMsg::Unsubscribe`](crate::ClientMsg::Unsubscribe).
    pub const UNSUBSCRIBE: &str = "unsubscribe";
    /// [`ClientMsg::Publish`](crate::ClientMsg::Publish).
    pub const PUBLISH: &str = "publish";
    /// [`ClientMsg::Ping`](crate::ClientMsg::Ping).
    pub const PING: &str = "ping";
    /// [`ClientMsg::Auth`](crate::ClientMsg::Auth).
    pub const AUTH: &str = "auth";
    /// [`ClientMsg::SubscribeExecutions`](crate::ClientMsg::SubscribeExecutions).
    pub const SUBSCRIBE_EXECUTIONS: &str = "subscribe_executions";
    /// [`ClientMsg::UnsubscribeExecutions`](crate::ClientMsg::UnsubscribeExecutions).
    pub const UNSUBSCRIBE_EXECUTIONS: &str = "unsubscribe_executions";
}

/// Values of a server frame's `type`.
pub mod kind {
    /// [`ServerMsg::Event`](crate::ServerMsg::Event).
    pub const EVENT: &str = "event";
    /// [`ServerMsg::Subscribed`](crate::ServerMsg::Subscribed).
    pub const SUBSCRIBED: &str = "subscribed";
    /// [`ServerMsg::Unsubscribed`](crate::ServerMsg::Unsubscribed).
    pub const UNSUBSCRIBED: &str = "unsubscribed";
    /// [`ServerMsg::Ack`](crate::ServerMsg::Ack).
    pub const ACK: &str = "ack";
    /// [`ServerMsg::Pong`](crate::ServerMsg::Pong).
    pub const PONG: &str = "pong";
    /// [`ServerMsg::HistoryLost`](crate::ServerMsg::HistoryLost).
    pub const HISTORY_LOST: &str = "history_lost";
    /// [`ServerMsg::Error`](crate::ServerMsg::Error).
    pub const ERROR: &str = "error";
    /// [`ServerMsg::Authenticated`](crate::ServerMsg::Authenticated).
    pub const AUTHENTICATED: &str = "authenticated";
    /// [`ServerMsg::Ended`](crate::ServerMsg::Ended).
    pub const ENDED: &str = "ended";
    /// [`ServerMsg::Executions`](crate::ServerMsg::Executions).
    pub const EXECUTIONS: &str = "executions";
    /// [`ServerMsg::Execution`](crate::ServerMsg::Execution).
    pub const EXECUTION: &str = "execution";
}

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use serde_json::Value;

    use super::{field::*, kind, op};
    use crate::{
        ClientMsg, ErrorCode, Event, EventData, HistoryPage, HttpValidationError, PublishAccepted,
        PublishRequest, RequestId, ServerMsg, ValidationError,
    };

    /// The keys of `value` serialized, sorted.
    fn keys(value: &impl Serialize) -> Vec<String> {
        match serde_json::to_value(value).expect("serializes") {
            Value::Object(map) => map.keys().cloned().collect(),
            other => panic!("not an object: {other}"),
        }
    }

    fn sorted(names: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        names.sort();
        names
    }

    fn tag(value: &impl Serialize, key: &str) -> String {
        serde_json::to_value(value).expect("serializes")[key]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn event() -> Event {
        Event {
            seq: 1,
            execution_id: "e".into(),
            event_type: "t".into(),
            timestamp: "now".into(),
            data: EventData::new(),
        }
    }

    #[test]
    fn bodies_use_the_named_fields() {
        assert_eq!(
            keys(&event()),
            sorted(&[SEQ, EXECUTION_ID, EVENT_TYPE, TIMESTAMP, DATA])
        );
        let page = HistoryPage {
            execution_id: "e".into(),
            events: vec![],
            last_seq: 0,
            oldest_seq: None,
            epoch: Some("e1".into()),
            history_lost: None,
        };
        assert_eq!(
            keys(&page),
            sorted(&[EXECUTION_ID, EVENTS, LAST_SEQ, OLDEST_SEQ, EPOCH])
        );
        let accepted = PublishAccepted {
            status: "accepted".into(),
            execution_id: "e".into(),
            seq: 1,
            timestamp: "now".into(),
        };
        assert!(keys(&accepted).contains(&SEQ.to_owned()));
        let request = PublishRequest {
            event_type: "t".into(),
            data: EventData::new(),
            timestamp: Some("now".into()),
        };
        assert_eq!(keys(&request), sorted(&[EVENT_TYPE, DATA, TIMESTAMP]));
        let problem = ValidationError::body_field("data", "missing", "Field required");
        assert_eq!(keys(&problem), sorted(&[LOC, MSG, TYPE]));
        let invalid = HttpValidationError { detail: vec![] };
        assert_eq!(keys(&invalid), sorted(&[DETAIL]));
    }

    /// Each frame serializes with its kind under `type` and exactly `fields`.
    fn assert_server_frames<const N: usize>(frames: [(ServerMsg, &str, Vec<&str>); N]) {
        for (frame, kind, mut fields) in frames {
            assert_eq!(tag(&frame, TYPE), kind);
            fields.push(TYPE);
            assert_eq!(keys(&frame), sorted(&fields), "{kind}");
        }
    }

    #[test]
    fn subscription_frames_use_the_named_kinds_and_fields() {
        let id = Some(RequestId::Num(1));
        assert_server_frames([
            (
                ServerMsg::Event {
                    epoch: Some("e1".into()),
                    event: event(),
                },
                kind::EVENT,
                vec![EPOCH, EVENT],
            ),
            (
                ServerMsg::Subscribed {
                    id: id.clone(),
                    execution_id: "e".into(),
                    after: 0,
                    epoch: Some("e1".into()),
                },
                kind::SUBSCRIBED,
                vec![ID, EXECUTION_ID, AFTER, EPOCH],
            ),
            (
                ServerMsg::Unsubscribed {
                    id: id.clone(),
                    execution_id: "e".into(),
                },
                kind::UNSUBSCRIBED,
                vec![ID, EXECUTION_ID],
            ),
            (
                ServerMsg::HistoryLost {
                    execution_id: "e".into(),
                    after: 1,
                    resume_after: 2,
                    reason: crate::LostReason::Expired,
                    epoch: Some("e2".into()),
                },
                kind::HISTORY_LOST,
                vec![EXECUTION_ID, AFTER, RESUME_AFTER, REASON, EPOCH],
            ),
            (
                ServerMsg::Ended {
                    execution_id: "e".into(),
                    status: "completed".into(),
                    seq: 3,
                },
                kind::ENDED,
                vec![EXECUTION_ID, STATUS, SEQ],
            ),
        ]);
    }

    #[test]
    fn answer_frames_use_the_named_kinds_and_fields() {
        let id = Some(RequestId::Num(1));
        assert_server_frames([
            (
                ServerMsg::Ack {
                    id: id.clone(),
                    execution_id: "e".into(),
                    seq: 1,
                    first_seq: None,
                    timestamp: "now".into(),
                },
                kind::ACK,
                vec![ID, EXECUTION_ID, SEQ, TIMESTAMP],
            ),
            (ServerMsg::Pong { id: id.clone() }, kind::PONG, vec![ID]),
            (
                ServerMsg::Authenticated {
                    id: id.clone(),
                    expires_at: 1,
                },
                kind::AUTHENTICATED,
                vec![ID, EXPIRES_AT],
            ),
            (
                ServerMsg::Executions {
                    id: id.clone(),
                    executions: vec![],
                },
                kind::EXECUTIONS,
                vec![ID, EXECUTIONS],
            ),
            (
                ServerMsg::Error {
                    id,
                    code: ErrorCode::Internal,
                    message: "m".into(),
                    execution_id: Some("e".into()),
                    detail: Some(vec![ValidationError::body_field("data", "k", "m")]),
                },
                kind::ERROR,
                vec![ID, CODE, MESSAGE, EXECUTION_ID, DETAIL],
            ),
        ]);
    }

    /// Each frame serializes with its op under `op` and exactly `fields`.
    fn assert_client_frames<const N: usize>(frames: [(ClientMsg, &str, Vec<&str>); N]) {
        for (frame, op, mut fields) in frames {
            assert_eq!(tag(&frame, OP), op);
            fields.push(OP);
            assert_eq!(keys(&frame), sorted(&fields), "{op}");
        }
    }

    #[test]
    fn client_subscription_frames_use_the_named_ops_and_fields() {
        let id = Some(RequestId::Num(1));
        assert_client_frames([
            (
                ClientMsg::Subscribe {
                    id: id.clone(),
                    execution_id: "e".into(),
                    after: Some(1),
                    epoch: Some("e1".into()),
                },
                op::SUBSCRIBE,
                vec![ID, EXECUTION_ID, AFTER, EPOCH],
            ),
            (
                ClientMsg::Unsubscribe {
                    id: id.clone(),
                    execution_id: "e".into(),
                },
                op::UNSUBSCRIBE,
                vec![ID, EXECUTION_ID],
            ),
            (
                ClientMsg::SubscribeExecutions {
                    id: id.clone(),
                    status: crate::StatusFilter::Running,
                },
                op::SUBSCRIBE_EXECUTIONS,
                vec![ID, STATUS],
            ),
            (
                ClientMsg::UnsubscribeExecutions { id: id.clone() },
                op::UNSUBSCRIBE_EXECUTIONS,
                vec![ID],
            ),
        ]);
    }

    #[test]
    fn client_requests_use_the_named_ops_and_fields() {
        let id = Some(RequestId::Num(1));
        assert_client_frames([
            (
                ClientMsg::Publish {
                    id: id.clone(),
                    execution_id: "e".into(),
                    event: PublishRequest {
                        event_type: "t".into(),
                        data: EventData::new(),
                        timestamp: Some("now".into()),
                    },
                    idempotency_key: Some("k".into()),
                },
                op::PUBLISH,
                vec![
                    ID,
                    EXECUTION_ID,
                    EVENT_TYPE,
                    DATA,
                    TIMESTAMP,
                    IDEMPOTENCY_KEY,
                ],
            ),
            (
                ClientMsg::Auth {
                    id: id.clone(),
                    token: "t".into(),
                },
                op::AUTH,
                vec![ID, TOKEN],
            ),
            (ClientMsg::Ping { id }, op::PING, vec![ID]),
        ]);
    }
}
