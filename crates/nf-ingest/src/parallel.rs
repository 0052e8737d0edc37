//! A small parallel map over scoped threads: results come back in input order whatever
//! the thread count, so an ingest writes the same bytes on 1 core and on 16.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// Applies `f` to every item on `threads` threads (0 or 1: on this thread). `on_done` is
/// called on the calling thread as each item finishes, in completion order, with its index
/// and result, so the caller can report progress; the results are returned in input order.
pub fn map<T, R, F>(items: &[T], threads: usize, f: F, mut on_done: impl FnMut(usize, &R)) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let r = f(t);
                on_done(i, &r);
                r
            })
            .collect();
    }
    let next = AtomicUsize::new(0);
    let mut out: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, f) = (&next, &f);
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    if tx.send((i, f(item))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (i, r) in rx {
            on_done(i, &r);
            out[i] = Some(r);
        }
    });
    out.into_iter()
        .map(|r| r.expect("every item was processed"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_keep_input_order() {
        let items: Vec<u64> = (0..100).collect();
        for threads in [0, 1, 3, 8] {
            let mut seen = 0;
            let out = super::map(&items, threads, |x| x * x, |_, _| seen += 1);
            assert_eq!(out, items.iter().map(|x| x * x).collect::<Vec<_>>());
            assert_eq!(seen, 100);
        }
        assert!(super::map(&[] as &[u8], 4, |x| *x, |_, _| {}).is_empty());
    }
}
