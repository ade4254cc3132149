//! A monotonically increasing position that tasks of one reactor can wait on ("flushed up to
//! here"). Waiters are woken when the position reaches their target; the number of waiters is
//! bounded by the number of requests in flight, which the remoting layer bounds.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Debug)]
pub struct Watermark {
    value: Cell<u64>,
    /// Sorted by target. Targets mostly arrive in increasing order (tickets, end offsets of
    /// appends), so inserting is a push at the back and an advance pops only the waiters it
    /// satisfies: no scan of those still waiting (a scan per advance was 8 % of the store
    /// bench with 64 writers queued behind the memory window).
    waiters: RefCell<VecDeque<(u64, Waker)>>,
    /// Bumped by `wake_all`: every wait begun before it completes, below its target.
    epoch: Cell<u64>,
}

impl Watermark {
    pub fn new(value: u64) -> Watermark {
        Watermark {
            value: Cell::new(value),
            waiters: RefCell::new(VecDeque::new()),
            epoch: Cell::new(0),
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
        loop {
            // Pop under the borrow, wake outside it: a woken waker may poll a waiter at once.
            let ready = {
                let mut waiters = self.waiters.borrow_mut();
                match waiters.front() {
                    Some((target, _)) if *target <= value => waiters.pop_front(),
                    _ => None,
                }
            };
            match ready {
                Some((_, waker)) => waker.wake(),
                None => return,
            }
        }
    }

    /// Resets the position (recovery only; nobody may be waiting).
    pub fn reset(&self, value: u64) {
        debug_assert!(self.waiters.borrow().is_empty());
        self.value.set(value);
    }

    /// Completes once the position is at least `target`, or once `wake_all` is called: it
    /// returns the position then, which callers compare with their target.
    pub fn wait_for(&self, target: u64) -> WaitFor<'_> {
        WaitFor {
            mark: self,
            target,
            epoch: self.epoch.get(),
        }
    }

    /// Completes every wait without advancing, so waiters can observe a failure elsewhere.
    pub fn wake_all(&self) {
        self.epoch.set(self.epoch.get() + 1);
        let woken = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, waker) in woken {
            waker.wake();
        }
    }

    /// Registers `waker` for `target` unless the same task already waits for it there (a task
    /// that polls again, or loops on the same target while nothing moves, adds no entry). An
    /// entry left by a dropped wait goes when the position passes its target.
    fn register(&self, target: u64, waker: &Waker) {
        let mut waiters = self.waiters.borrow_mut();
        // First index with a greater target: waiters with equal targets sit just before it.
        let end = waiters.partition_point(|(t, _)| *t <= target);
        let already = waiters
            .range(..end)
            .rev()
            .take_while(|(t, _)| *t == target)
            .any(|(_, w)| w.will_wake(waker));
        if !already {
            waiters.insert(end, (target, waker.clone()));
        }
    }
}

pub struct WaitFor<'a> {
    mark: &'a Watermark,
    target: u64,
    /// The mark's `epoch` when the wait began.
    epoch: u64,
}

impl Future for WaitFor<'_> {
    type Output = u64;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        let value = self.mark.value.get();
        if value >= self.target || self.mark.epoch.get() != self.epoch {
            return Poll::Ready(value);
        }
        self.mark.register(self.target, cx.waker());
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

    #[test]
    fn wake_all_completes_waits_below_their_target() {
        let mark = Watermark::new(3);
        let mut wait = Box::pin(mark.wait_for(10));
        assert!(future::block_on(future::poll_once(&mut wait)).is_none());
        mark.wake_all();
        assert_eq!(future::block_on(future::poll_once(&mut wait)), Some(3));
        // A wait begun after it waits for its target again.
        let mut later = Box::pin(mark.wait_for(10));
        assert!(future::block_on(future::poll_once(&mut later)).is_none());
    }

    #[test]
    fn out_of_order_targets_are_woken_exactly_when_reached_and_repolls_add_no_entry() {
        let mark = Watermark::new(0);
        let mut waits: Vec<_> = [30, 10, 20, 10]
            .into_iter()
            .map(|t| Box::pin(mark.wait_for(t)))
            .collect();
        for _ in 0..3 {
            for w in &mut waits {
                assert!(future::block_on(future::poll_once(w)).is_none());
            }
        }
        // All four share block_on's thread waker: one entry per distinct target, however
        // often they are polled.
        assert_eq!(mark.waiters.borrow().len(), 3);
        let targets: Vec<u64> = mark.waiters.borrow().iter().map(|(t, _)| *t).collect();
        assert!(targets.windows(2).all(|w| w[0] <= w[1]), "{targets:?}");
        mark.advance(19);
        assert!(mark.waiters.borrow().iter().all(|(t, _)| *t > 19));
        assert_eq!(future::block_on(future::poll_once(&mut waits[1])), Some(19));
        assert!(future::block_on(future::poll_once(&mut waits[2])).is_none());
        mark.advance(30);
        assert!(mark.waiters.borrow().is_empty());
        assert_eq!(future::block_on(future::poll_once(&mut waits[0])), Some(30));
    }
}
