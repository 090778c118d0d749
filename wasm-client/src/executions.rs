//! The JavaScript facade of executions as wholes: how one stands or ended
//! (`getExecution`, `result`), the recent ones (`listExecutions`), and the
//! list followed live over the client's socket (`subscribeExecutions`).

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use js_sys::Function;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::error::ClientError;
use crate::http;
use crate::shared::{ListHandlers, Shared, act, perform};
use crate::types::executions::{
    ListOptionsJs, ListPromise, ListSubscribeOptions, ListView, ResultOptionsJs, SnapshotHandlerJs,
    SubscribeExecutionsOptionsJs, SummaryPromise, SummaryView,
};
use crate::types::{self, CallOptions};
use crate::wire::to_js;
use crate::{ExechubClient, promise};

#[wasm_bindgen]
impl ExechubClient {
    /// Follows the list of executions: `onSnapshot` gets the executions now
    /// (most recently updated first) once connected, and again after every
    /// reconnect; `onChange` each change after it.
    #[wasm_bindgen(js_name = subscribeExecutions)]
    pub fn subscribe_executions(
        &self,
        #[wasm_bindgen(js_name = onSnapshot)] on_snapshot: SnapshotHandlerJs,
        options: Option<SubscribeExecutionsOptionsJs>,
    ) -> Result<ExecutionsSubscription, JsValue> {
        let options: ListSubscribeOptions =
            types::options(options.map(Into::into), "SubscribeExecutionsOptions")?;
        let on_snapshot: Function = JsValue::from(on_snapshot)
            .dyn_into()
            .map_err(|_| ClientError::InvalidArgument("onSnapshot must be a function".into()))?;
        let handlers = Rc::new(ListHandlers {
            on_snapshot,
            on_change: options.on_change,
            on_error: options.on_error,
            stopped: Cell::new(false),
        });
        let subscribed = self
            .shared
            .borrow_mut()
            .machine
            .subscribe_executions(options.status, handlers.clone());
        let (key, actions) = subscribed?;
        perform(&self.shared, actions);
        Ok(ExecutionsSubscription {
            shared: Rc::downgrade(&self.shared),
            key,
            handlers,
        })
    }

    /// The summary of an execution over HTTP; `null` when the hub does not know it.
    #[wasm_bindgen(js_name = getExecution)]
    pub fn get_execution(
        &self,
        #[wasm_bindgen(js_name = executionId)] execution_id: String,
    ) -> SummaryPromise {
        self.summary(execution_id, Ok(http::Ask::Summary))
    }

    /// The execution's final state over HTTP, waiting up to `wait` seconds
    /// for its end (the summary is still `running` when the wait ran out);
    /// `null` when the hub does not know it.
    pub fn result(
        &self,
        #[wasm_bindgen(js_name = executionId)] execution_id: String,
        options: Option<ResultOptionsJs>,
    ) -> SummaryPromise {
        let options = types::options::<CallOptions>(options.map(Into::into), "ResultOptions");
        let ask = options.map(|options| http::Ask::Result { wait: options.wait });
        self.summary(execution_id, ask)
    }

    /// A page of executions over HTTP, most recently updated first.
    #[wasm_bindgen(js_name = listExecutions)]
    pub fn list_executions(&self, options: Option<ListOptionsJs>) -> ListPromise {
        let options =
            types::options::<CallOptions>(options.map(Into::into), "ListExecutionsOptions");
        let (base, token) = (self.http_url.clone(), self.http_token());
        promise(async move {
            let CallOptions {
                status,
                limit,
                cursor,
                ..
            } = options?;
            let token = token.await;
            let cursor = cursor.as_deref();
            let list = http::executions(&base, status, limit, cursor, token.as_deref()).await?;
            Ok(to_js(&ListView::from(&list)))
        })
        .unchecked_into()
    }
}

impl ExechubClient {
    /// A Promise of the summary `ask` asks for.
    fn summary(&self, execution_id: String, ask: Result<http::Ask, ClientError>) -> SummaryPromise {
        let (base, token) = (self.http_url.clone(), self.http_token());
        promise(async move {
            let ask = ask?;
            let token = token.await;
            let summary = http::execution(&base, &execution_id, ask, token.as_deref()).await?;
            Ok(to_js(&summary.as_ref().map(SummaryView::from)))
        })
        .unchecked_into()
    }
}

/// A subscription made with [`ExechubClient::subscribe_executions`]; as
/// with [`Subscription`], freeing the handle does not end it.
#[wasm_bindgen]
pub struct ExecutionsSubscription {
    shared: Weak<RefCell<Shared>>,
    key: u64,
    handlers: Rc<ListHandlers>,
}

#[wasm_bindgen]
impl ExecutionsSubscription {
    /// Stops it; nothing is delivered after this returns.
    pub fn unsubscribe(&self) {
        self.handlers.stopped.set(true);
        if let Some(shared) = self.shared.upgrade() {
            act(&shared, |machine| machine.unsubscribe_executions(self.key));
        }
    }
}
