//! A monotonically increasing position that tasks of one reactor can wait on ("flushed up to
//! here"). Waiters are woken when the position reaches their target; a wait dropped before
//! that (the loser of a race with a timeout or another wait) takes its entry with it, so the
//! number of entries is bounded by the waits in progress, which the remoting layer bounds.

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
    waiters: RefCell<VecDeque<Waiter>>,
    /// Bumped by `wake_all`: every wait begun before it completes, below its target.
    epoch: Cell<u64>,
}

/// One entry: the waits of one task for one target, in one epoch, share it (`waits` counts
/// them); waking the task once wakes them all.
#[derive(Debug)]
struct Waiter {
    target: u64,
    waker: Waker,
    epoch: u64,
    waits: u32,
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
                    Some(waiter) if waiter.target <= value => waiters.pop_front(),
                    _ => None,
                }
            };
            match ready {
                Some(waiter) => waiter.waker.wake(),
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
            registered: None,
        }
    }

    /// Completes every wait without advancing, so waiters can observe a failure elsewhere.
    pub fn wake_all(&self) {
        self.epoch.set(self.epoch.get() + 1);
        let woken = std::mem::take(&mut *self.waiters.borrow_mut());
        for waiter in woken {
            waiter.waker.wake();
        }
    }

    /// Waits registered and not yet woken or dropped (tests and leak checks).
    pub fn waits_pending(&self) -> usize {
        self.waiters.borrow().iter().map(|w| w.waits as usize).sum()
    }

    /// The index of the entry of `waker`'s task for `target` in `epoch`, if any. Entries with
    /// equal targets sit just before the first greater target.
    fn find(waiters: &VecDeque<Waiter>, target: u64, waker: &Waker, epoch: u64) -> Option<usize> {
        let end = waiters.partition_point(|w| w.target <= target);
        (0..end)
            .rev()
            .take_while(|&i| waiters[i].target == target)
            .find(|&i| waiters[i].epoch == epoch && waiters[i].waker.will_wake(waker))
    }

    /// Adds one wait of `waker`'s task for `target`: to the task's entry there if it has one
    /// (a task that loops on the same target while nothing moves adds no entry), else a new
    /// entry.
    fn register(&self, target: u64, waker: &Waker, epoch: u64) {
        let mut waiters = self.waiters.borrow_mut();
        match Self::find(&waiters, target, waker, epoch) {
            Some(i) => waiters[i].waits += 1,
            None => {
                let end = waiters.partition_point(|w| w.target <= target);
                let waiter = Waiter {
                    target,
                    waker: waker.clone(),
                    epoch,
                    waits: 1,
                };
                waiters.insert(end, waiter);
            }
        }
    }

    /// Takes one wait away from the task's entry (a wait dropped or moved to another waker);
    /// the entry goes with its last wait. Nothing to do when an advance or `wake_all` has
    /// taken the entry already.
    fn deregister(&self, target: u64, waker: &Waker, epoch: u64) {
        let mut waiters = self.waiters.borrow_mut();
        if let Some(i) = Self::find(&waiters, target, waker, epoch) {
            waiters[i].waits -= 1;
            if waiters[i].waits == 0 {
                waiters.remove(i);
            }
        }
    }
}

pub struct WaitFor<'a> {
    mark: &'a Watermark,
    target: u64,
    /// The mark's `epoch` when the wait began.
    epoch: u64,
    /// The waker this wait is counted under, while it is.
    registered: Option<Waker>,
}

impl Future for WaitFor<'_> {
    type Output = u64;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        let value = self.mark.value.get();
        if value >= self.target || self.mark.epoch.get() != self.epoch {
            // Whatever completed it (an advance past the target, `wake_all`) took the entry.
            self.registered = None;
            return Poll::Ready(value);
        }
        let waker = cx.waker();
        match &self.registered {
            Some(registered) if registered.will_wake(waker) => {}
            _ => {
                if let Some(old) = self.registered.take() {
                    self.mark.deregister(self.target, &old, self.epoch);
                }
                self.mark.register(self.target, waker, self.epoch);
                self.registered = Some(waker.clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for WaitFor<'_> {
    fn drop(&mut self) {
        if let Some(waker) = self.registered.take() {
            self.mark.deregister(self.target, &waker, self.epoch);
        }
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
        let targets: Vec<u64> = mark.waiters.borrow().iter().map(|w| w.target).collect();
        assert!(targets.windows(2).all(|w| w[0] <= w[1]), "{targets:?}");
        mark.advance(19);
        assert!(mark.waiters.borrow().iter().all(|w| w.target > 19));
        assert_eq!(future::block_on(future::poll_once(&mut waits[1])), Some(19));
        assert!(future::block_on(future::poll_once(&mut waits[2])).is_none());
        mark.advance(30);
        assert!(mark.waiters.borrow().is_empty());
        assert_eq!(future::block_on(future::poll_once(&mut waits[0])), Some(30));
    }

    #[test]
    fn a_dropped_wait_takes_its_entry_with_it_and_leaves_the_others() {
        let mark = Watermark::new(0);
        // Two waits of one task for one target share an entry; dropping one keeps it for the
        // other, dropping both removes it.
        let mut first = Box::pin(mark.wait_for(10));
        let mut second = Box::pin(mark.wait_for(10));
        let mut other = Box::pin(mark.wait_for(20));
        for w in [&mut first, &mut second, &mut other] {
            assert!(future::block_on(future::poll_once(w)).is_none());
        }
        assert_eq!((mark.waiters.borrow().len(), mark.waits_pending()), (2, 3));
        drop(first);
        assert_eq!((mark.waiters.borrow().len(), mark.waits_pending()), (2, 2));
        mark.advance(10);
        assert_eq!(future::block_on(future::poll_once(&mut second)), Some(10));
        drop(second);
        drop(other);
        assert_eq!(mark.waits_pending(), 0, "nothing left behind");
        assert!(mark.waiters.borrow().is_empty());
    }

    #[test]
    fn a_wait_that_loses_a_race_leaves_nothing_behind() {
        // A parked pull races its queue's mark against shutdown's: whichever completes, the
        // other wait is dropped pending and must not stay registered.
        let head = Watermark::new(0);
        let stopping = Watermark::new(0);
        for round in 1..=100u64 {
            let mut race = Box::pin(future::or(head.wait_for(round), async {
                stopping.wait_for(1).await;
                0
            }));
            assert!(future::block_on(future::poll_once(&mut race)).is_none());
            head.advance(round);
            assert_eq!(future::block_on(race), round);
        }
        assert_eq!(
            stopping.waits_pending(),
            0,
            "a stale entry per finished race"
        );
        assert_eq!(head.waits_pending(), 0);
    }

    #[test]
    fn a_dropped_wait_of_an_old_epoch_does_not_take_a_new_waits_entry() {
        let mark = Watermark::new(0);
        let mut old = Box::pin(mark.wait_for(10));
        assert!(future::block_on(future::poll_once(&mut old)).is_none());
        mark.wake_all();
        // Same task, same target, a new epoch: its own entry.
        let mut new = Box::pin(mark.wait_for(10));
        assert!(future::block_on(future::poll_once(&mut new)).is_none());
        drop(old);
        assert_eq!(mark.waits_pending(), 1, "the new wait is still registered");
        mark.advance(10);
        assert_eq!(future::block_on(future::poll_once(&mut new)), Some(10));
    }
}
