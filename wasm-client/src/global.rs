//! The global scope's APIs the client uses, through web-sys: timers, as a
//! future that cancels its timer when dropped, and `atob`.
//!
//! Windows, web workers and Node all have these on the global object.
//! web-sys declares them on `Window` and `WorkerGlobalScope` (the
//! `WindowOrWorkerGlobalScope` mixin has no type of its own) and calls them
//! by name, so the global is viewed as a `WorkerGlobalScope` without a class
//! check; that is what lets the same package run in all three.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::WorkerGlobalScope;

/// The global scope (window, worker or Node's `globalThis`).
pub fn scope() -> WorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// Whether the global scope has a property `name` (e.g. `WebSocket`).
pub fn has(name: &str) -> bool {
    js_sys::Reflect::has(&js_sys::global(), &name.into()).unwrap_or(false)
}

/// Shared by a [`Sleep`] and its timer's callback.
#[derive(Default)]
struct Alarm {
    rung: bool,
    waker: Option<Waker>,
}

/// A future that is ready once `delay` has passed. Dropping it cancels the
/// timer and releases its callback, as gloo-timers' `Timeout` does.
pub struct Sleep {
    alarm: Rc<RefCell<Alarm>>,
    /// The timer's handle; `None` if the timer could not be set.
    handle: Option<i32>,
    /// Called by the timer; kept alive until the timer is cancelled or has fired.
    _callback: Closure<dyn FnMut()>,
}

impl Sleep {
    /// Sleeps for `delay` (at most about 24 days, the timers' limit).
    pub fn new(delay: Duration) -> Self {
        let alarm = Rc::new(RefCell::new(Alarm::default()));
        let ring = Rc::clone(&alarm);
        let callback = Closure::<dyn FnMut()>::new(move || {
            let waker = {
                let mut alarm = ring.borrow_mut();
                alarm.rung = true;
                alarm.waker.take()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        });
        let ms = i32::try_from(delay.as_millis()).unwrap_or(i32::MAX);
        let handle = scope()
            .set_timeout_with_callback_and_timeout_and_arguments_0(
                callback.as_ref().unchecked_ref(),
                ms,
            )
            .ok();
        // A timer that cannot be set rings at once rather than never.
        alarm.borrow_mut().rung = handle.is_none();
        Self {
            alarm,
            handle,
            _callback: callback,
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut alarm = self.alarm.borrow_mut();
        if alarm.rung {
            return Poll::Ready(());
        }
        alarm.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let (Some(handle), false) = (self.handle, self.alarm.borrow().rung) {
            scope().clear_timeout_with_handle(handle);
        }
    }
}
