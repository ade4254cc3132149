//! Task registries: the background tasks of one owner (a shard, a store) are spawned through
//! its registry, by name. The owner stops them with one signal that each task waits on next to
//! its work (no task polls a flag), and `join` waits until every one has exited, naming those
//! that did not in time.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use super::watermark::Watermark;

/// The background tasks of one owner.
pub struct TaskRegistry {
    owner: String,
    stop: StopSignal,
    running: Rc<RefCell<BTreeMap<u64, &'static str>>>,
    /// Counts exits; `join` waits on it.
    exits: Rc<Watermark>,
    next_id: Cell<u64>,
}

/// Set once, by [`TaskRegistry::stop`]; tasks wait on it alongside their work.
#[derive(Clone, Debug)]
pub struct StopSignal(Rc<Watermark>);

impl StopSignal {
    pub fn is_set(&self) -> bool {
        self.0.get() > 0
    }

    /// Completes when the stop is signalled.
    pub async fn wait(&self) {
        self.0.wait_for(1).await;
    }

    /// Sleeps for `duration`; `false` when the stop came first (the caller should return).
    pub async fn sleep(&self, duration: Duration) -> bool {
        let slept = futures_lite::future::or(
            async {
                super::sleep(duration).await;
                true
            },
            async {
                self.wait().await;
                false
            },
        )
        .await;
        slept && !self.is_set()
    }
}

impl TaskRegistry {
    pub fn new(owner: impl Into<String>) -> TaskRegistry {
        TaskRegistry {
            owner: owner.into(),
            stop: StopSignal(Rc::new(Watermark::new(0))),
            running: Rc::new(RefCell::new(BTreeMap::new())),
            exits: Rc::new(Watermark::new(0)),
            next_id: Cell::new(0),
        }
    }

    /// Runs `future` as a task of this owner, counted until it completes.
    pub fn spawn(&self, name: &'static str, future: impl Future<Output = ()> + 'static) {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.running.borrow_mut().insert(id, name);
        let exit = Exit {
            id,
            running: self.running.clone(),
            exits: self.exits.clone(),
        };
        super::spawn_detached(async move {
            let _exit = exit;
            future.await;
        });
    }

    pub fn stop_signal(&self) -> StopSignal {
        self.stop.clone()
    }

    /// Signals every task to stop.
    pub fn stop(&self) {
        self.stop.0.advance(1);
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.is_set()
    }

    /// Names of the tasks still running.
    pub fn running(&self) -> Vec<&'static str> {
        self.running.borrow().values().copied().collect()
    }

    /// Waits until every task has exited; after `timeout`, the names of those still running.
    pub async fn join(&self, timeout: Duration) -> Result<(), Vec<&'static str>> {
        let all_exited = async {
            while !self.running.borrow().is_empty() {
                let seen = self.exits.get();
                self.exits.wait_for(seen + 1).await;
            }
        };
        match super::timeout(timeout, all_exited).await {
            Some(()) => Ok(()),
            None => {
                let running = self.running();
                tracing::warn!(owner = %self.owner, ?running, "tasks still running after the stop");
                Err(running)
            }
        }
    }
}

/// Takes a task off its registry when the task completes or is dropped.
struct Exit {
    id: u64,
    running: Rc<RefCell<BTreeMap<u64, &'static str>>>,
    exits: Rc<Watermark>,
}

impl Drop for Exit {
    fn drop(&mut self) {
        self.running.borrow_mut().remove(&self.id);
        self.exits.advance(self.exits.get() + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{run_reactor, ReactorConfig};

    #[test]
    fn stop_reaches_every_task_and_join_names_those_that_ignore_it() {
        let (first, second) = run_reactor(ReactorConfig::new("tasks-test"), || async {
            let tasks = TaskRegistry::new("test");
            for name in ["sleeper", "waiter"] {
                let stop = tasks.stop_signal();
                tasks.spawn(name, async move {
                    // Would sleep for an hour; the stop ends it at once.
                    while stop.sleep(Duration::from_secs(3600)).await {}
                });
            }
            let (_never_tx, never) = crate::bounded_channel::<()>(1);
            tasks.spawn("deaf", async move {
                let _ = never.recv().await;
            });
            assert_eq!(tasks.running(), vec!["sleeper", "waiter", "deaf"]);
            tasks.stop();
            let first = tasks.join(Duration::from_millis(200)).await;
            drop(_never_tx); // the deaf task's channel closes: it ends too
            let second = tasks.join(Duration::from_secs(10)).await;
            (first, second)
        })
        .unwrap();
        assert_eq!(first, Err(vec!["deaf"]));
        assert_eq!(second, Ok(()));
    }
}
