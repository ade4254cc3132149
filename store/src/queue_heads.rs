//! Long-poll marks: how far each queue has grown, for the pulls (and delayed-delivery loops)
//! waiting at its tail. The store advances a queue's mark inside the put that grows it, once
//! the records are visible, so no caller has to remember to; a mark exists only while
//! somebody waits on it, so the table is bounded by the waits in progress (which the
//! remoting layer bounds), not by every queue ever pulled.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::runtime::watermark::Watermark;

/// Topic → queue id → mark (nested, so a put looks its queue up without allocating a key).
type Heads = HashMap<String, HashMap<i32, Rc<Watermark>>>;

#[derive(Debug, Default)]
pub struct QueueHeads {
    heads: RefCell<Heads>,
}

impl QueueHeads {
    /// Records that `topic`/`queue_id` now holds messages below `max_offset`: wakes the waits
    /// for anything below it.
    pub fn advance(&self, topic: &str, queue_id: i32, max_offset: u64) {
        let head = self
            .heads
            .borrow()
            .get(topic)
            .and_then(|queues| queues.get(&queue_id))
            .cloned();
        if let Some(head) = head {
            head.advance(max_offset);
        }
    }

    /// Completes when the queue holds a message at `offset` (an advance past it), or at
    /// [`QueueHeads::wake_all`]. Callers read the queue before waiting and do not yield in
    /// between, so no growth can be missed.
    pub async fn wait_beyond(&self, topic: &str, queue_id: i32, offset: u64) {
        let head = self
            .heads
            .borrow_mut()
            .entry(topic.to_owned())
            .or_default()
            .entry(queue_id)
            .or_insert_with(|| Rc::new(Watermark::new(0)))
            .clone();
        let _prune = Prune {
            heads: &self.heads,
            topic,
            queue_id,
            head: &head,
        };
        head.wait_for(offset + 1).await;
    }

    /// Completes every wait in progress (shutdown: parked pulls answer at once).
    pub fn wake_all(&self) {
        let heads: Vec<_> = self
            .heads
            .borrow()
            .values()
            .flat_map(|queues| queues.values().cloned())
            .collect();
        for head in heads {
            head.wake_all();
        }
    }

    /// Queues with a wait in progress.
    pub fn len(&self) -> usize {
        self.heads.borrow().values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes a queue's mark when its last wait ends (completed or dropped).
struct Prune<'a> {
    heads: &'a RefCell<Heads>,
    topic: &'a str,
    queue_id: i32,
    head: &'a Rc<Watermark>,
}

impl Drop for Prune<'_> {
    fn drop(&mut self) {
        // The table's reference and this wait's: nobody else waits.
        if Rc::strong_count(self.head) != 2 {
            return;
        }
        let mut heads = self.heads.borrow_mut();
        if let Some(queues) = heads.get_mut(self.topic) {
            queues.remove(&self.queue_id);
            if queues.is_empty() {
                heads.remove(self.topic);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

    #[test]
    fn a_wait_completes_when_its_queue_grows_past_it_and_leaves_nothing_behind() {
        let heads = QueueHeads::default();
        let mut parked = Box::pin(heads.wait_beyond("T", 0, 5));
        let mut other = Box::pin(heads.wait_beyond("T", 0, 5));
        assert!(future::block_on(future::poll_once(&mut parked)).is_none());
        assert!(future::block_on(future::poll_once(&mut other)).is_none());
        assert_eq!(heads.len(), 1, "one mark per queue");
        heads.advance("T", 1, 100); // another queue
        heads.advance("T", 0, 5); // offset 5 is not there yet
        assert!(future::block_on(future::poll_once(&mut parked)).is_none());
        heads.advance("T", 0, 6);
        assert!(future::block_on(future::poll_once(&mut parked)).is_some());
        drop(parked);
        assert_eq!(heads.len(), 1, "the other wait still holds the mark");
        drop(other); // a pull that timed out
        assert!(heads.is_empty(), "no mark outlives its waits");
    }

    #[test]
    fn wake_all_completes_every_wait() {
        let heads = QueueHeads::default();
        let mut a = Box::pin(heads.wait_beyond("A", 0, 0));
        let mut b = Box::pin(heads.wait_beyond("B", 3, 9));
        assert!(future::block_on(future::poll_once(&mut a)).is_none());
        assert!(future::block_on(future::poll_once(&mut b)).is_none());
        heads.wake_all();
        assert!(future::block_on(future::poll_once(&mut a)).is_some());
        assert!(future::block_on(future::poll_once(&mut b)).is_some());
        drop((a, b));
        assert!(heads.is_empty());
    }
}
