//! A monotonically increasing position that tasks of one reactor can wait on ("flushed up to
//! here"). Waiters are woken when the position reaches their target; the number of waiters is
//! bounded by the number of requests in flight, which the remoting layer bounds.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
pub struct Watermark {
    value: Cell<u64>,
    waiters: RefCell<Vec<(u64, Waker)>>,
}

impl Watermark {
    pub fn new(value: u64) -> Watermark {
        Watermark {
            value: Cell::new(value),
            waiters: RefCell::new(Vec::new()),
        }
    }

    pub fn get(&self) -> u64 {
        self.value.get()
    }

    /// Moves the position forward (never back) and wakes every waiter it satisfies.
    pub fn advance(&self, value: u64) {
        if value <= self.value.get() {
            return;
        }
        self.value.set(value);
        let mut ready = Vec::new();
        self.waiters.borrow_mut().retain(|(target, waker)| {
            if *target <= value {
                ready.push(waker.clone());
                false
            } else {
                true
            }
        });
        for waker in ready {
            waker.wake();
        }
    }

    /// Resets the position (recovery only; nobody may be waiting).
    pub fn reset(&self, value: u64) {
        debug_assert!(self.waiters.borrow().is_empty());
        self.value.set(value);
    }

    /// Completes once the position is at least `target`.
    pub fn wait_for(&self, target: u64) -> WaitFor<'_> {
        WaitFor { mark: self, target }
    }

    /// Wakes every waiter without advancing (so they can observe a failure elsewhere).
    pub fn wake_all(&self) {
        for (_, waker) in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }
}

pub struct WaitFor<'a> {
    mark: &'a Watermark,
    target: u64,
}

impl Future for WaitFor<'_> {
    type Output = u64;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        let value = self.mark.value.get();
        if value >= self.target {
            return Poll::Ready(value);
        }
        let mut waiters = self.mark.waiters.borrow_mut();
        match waiters.iter_mut().find(|(_, w)| w.will_wake(cx.waker())) {
            Some(entry) => entry.0 = self.target,
            None => waiters.push((self.target, cx.waker().clone())),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

    #[test]
    fn waiters_complete_in_order_of_their_targets() {
        let mark = Watermark::new(0);
        let mut low = Box::pin(mark.wait_for(10));
        let mut high = Box::pin(mark.wait_for(20));
        assert!(future::block_on(future::poll_once(&mut low)).is_none());
        assert!(future::block_on(future::poll_once(&mut high)).is_none());
        mark.advance(15);
        assert_eq!(future::block_on(future::poll_once(&mut low)), Some(15));
        assert!(future::block_on(future::poll_once(&mut high)).is_none());
        mark.advance(5); // never goes back
        assert_eq!(mark.get(), 15);
        mark.advance(20);
        assert_eq!(future::block_on(future::poll_once(&mut high)), Some(20));
        assert!(mark.waiters.borrow().is_empty());
    }
}
