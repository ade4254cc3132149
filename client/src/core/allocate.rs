//! RocketMQ's `AllocateMessageQueueAveragely`: how a clustering consumer group splits a topic's
//! queues. Every client of a group must compute the same split from the same inputs, so this
//! follows Java's arithmetic exactly, on inputs sorted as Java sorts them (queues by topic,
//! broker name, queue id; client ids as strings).

/// The queues `current` gets among `clients` (both lists sorted, as `rebalance` does).
/// Nothing when `current` is not a member or either list is empty.
pub fn allocate_averagely<T: Clone>(current: &str, queues: &[T], clients: &[String]) -> Vec<T> {
    let Some(index) = clients.iter().position(|c| c == current) else {
        return Vec::new();
    };
    if queues.is_empty() {
        return Vec::new();
    }
    let (q, c) = (queues.len(), clients.len());
    let modulo = q % c;
    let average = if q <= c {
        1
    } else if modulo > 0 && index < modulo {
        q / c + 1
    } else {
        q / c
    };
    let start = if modulo > 0 && index < modulo {
        index * average
    } else {
        index * average + modulo
    };
    let range = average.min(q.saturating_sub(start));
    (0..range)
        .map(|i| queues[(start + i) % q].clone())
        .collect()
}

/// Sorts both inputs as Java does, then allocates.
pub fn rebalance<T: Clone + Ord>(
    current: &str,
    mut queues: Vec<T>,
    mut clients: Vec<String>,
) -> Vec<T> {
    queues.sort();
    queues.dedup();
    clients.sort();
    clients.dedup();
    allocate_averagely(current, &queues, &clients)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    fn split(q: usize, c: usize) -> Vec<Vec<usize>> {
        let queues: Vec<usize> = (0..q).collect();
        let clients = ids(c);
        clients
            .iter()
            .map(|me| allocate_averagely(me, &queues, &clients))
            .collect()
    }

    #[test]
    fn matches_rocketmq_on_the_documented_examples() {
        assert_eq!(split(8, 3), vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7]]);
        assert_eq!(split(3, 5), vec![vec![0], vec![1], vec![2], vec![], vec![]]);
        assert_eq!(split(4, 2), vec![vec![0, 1], vec![2, 3]]);
        assert_eq!(split(5, 2), vec![vec![0, 1, 2], vec![3, 4]]);
        assert_eq!(
            split(10, 4),
            vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7], vec![8, 9]]
        );
        assert_eq!(split(1, 1), vec![vec![0]]);
    }

    #[test]
    fn strangers_and_empty_inputs_get_nothing() {
        let clients = ids(2);
        assert!(allocate_averagely("stranger", &[1, 2, 3], &clients).is_empty());
        assert!(allocate_averagely::<i32>("c0", &[], &clients).is_empty());
        assert!(allocate_averagely("c0", &[1], &[]).is_empty());
    }

    #[test]
    fn rebalance_sorts_like_java_so_input_order_does_not_matter() {
        let a = rebalance("c1", vec![3, 1, 2, 0], vec!["c1".into(), "c0".into()]);
        assert_eq!(a, vec![2, 3]);
    }

    proptest! {
        /// Every queue goes to exactly one client, in contiguous runs whose sizes differ by at
        /// most one.
        #[test]
        fn every_queue_has_exactly_one_owner(q in 0usize..64, c in 1usize..16) {
            let parts = split(q, c);
            let mut all: Vec<usize> = parts.iter().flatten().copied().collect();
            all.sort();
            prop_assert_eq!(all, (0..q).collect::<Vec<_>>());
            let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            prop_assert!(max - min <= 1);
        }
    }
}
