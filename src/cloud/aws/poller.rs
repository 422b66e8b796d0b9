//! One alarm poller per region for every rollout this process runs side by side. Each
//! fleet polls its gates on its own schedule; their reads meet here, and one batched
//! DescribeAlarms (100 names a call) reads every alarm watched at most every 250 ms, so
//! 100 fleets polling every second make a few calls a second, within CloudWatch's
//! request quota. A fleet whose poll comes while a read is under way waits for it.
//!
//! Throttling slows the poller rather than failing gates: after a transient failure the
//! next read waits twice as long (up to 5 s), and meanwhile polls get the last readings
//! while they are at most 10 s old, else the failure, which each rollout counts against
//! its retry budget as any fault.

use super::{AlarmReading, CloudError, CloudResult};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

/// How old a read may be and still answer a poll.
const FRESH: Duration = Duration::from_millis(250);
/// The longest wait between reads while AWS throttles them.
const SLOWEST: Duration = Duration::from_secs(5);
/// How old readings may be and still answer polls while AWS throttles.
const STALEST: Duration = Duration::from_secs(10);
/// An alarm nobody asked for this long is no longer read.
const WATCHED_FOR: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(super) struct Poller {
    /// Alarms asked for, with when they were last asked for: told before waiting for a
    /// read under way, so that the next read takes them in.
    watched: std::sync::Mutex<BTreeMap<String, Instant>>,
    /// The last reads; held while a read is under way.
    last: tokio::sync::Mutex<Polled>,
}

#[derive(Default)]
struct Polled {
    /// The last read that answered.
    read: Option<Read>,
    /// The last read, when it failed transiently, and the wait before the next one.
    failed: Option<(Instant, CloudError, Duration)>,
}

struct Read {
    at: Instant,
    asked: BTreeSet<String>,
    found: BTreeMap<String, AlarmReading>,
}

impl Poller {
    /// The readings of `names`: from a read fresh enough that found them all, else from
    /// a new read, by `read`, of every alarm watched.
    pub(super) async fn alarms<F, Fut>(
        &self,
        names: &[String],
        read: F,
    ) -> CloudResult<BTreeMap<String, AlarmReading>>
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: Future<Output = CloudResult<BTreeMap<String, AlarmReading>>>,
    {
        {
            let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            for name in names {
                watched.insert(name.clone(), now);
            }
        }
        let mut polled = self.last.lock().await;
        let now = Instant::now();
        let covers = |read: &Read| {
            names
                .iter()
                .all(|n| read.asked.contains(n) && read.found.contains_key(n))
        };
        // An alarm the last read did not find may have been created since: read again.
        if let Some(read) = polled.read.as_ref() {
            if now.duration_since(read.at) < FRESH && covers(read) {
                return Ok(pick(&read.found, names));
            }
        }
        if let Some((at, error, wait)) = &polled.failed {
            if now.duration_since(*at) < *wait {
                return match polled.read.as_ref() {
                    Some(read) if now.duration_since(read.at) < STALEST && covers(read) => {
                        Ok(pick(&read.found, names))
                    }
                    _ => Err(error.clone()),
                };
            }
        }
        let all: Vec<String> = {
            let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
            watched.retain(|_, asked| now.duration_since(*asked) < WATCHED_FOR);
            watched.keys().cloned().collect()
        };
        let found = match read(all.clone()).await {
            Ok(found) => found,
            Err(e) if e.is_transient() => {
                let wait = match &polled.failed {
                    Some((_, _, wait)) => (*wait * 2).min(SLOWEST),
                    None => FRESH * 2,
                };
                polled.failed = Some((now, e.clone(), wait));
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let picked = pick(&found, names);
        polled.failed = None;
        polled.read = Some(Read {
            at: now,
            asked: all.into_iter().collect(),
            found,
        });
        Ok(picked)
    }
}

fn pick(
    found: &BTreeMap<String, AlarmReading>,
    names: &[String],
) -> BTreeMap<String, AlarmReading> {
    names
        .iter()
        .filter_map(|n| Some((n.clone(), found.get(n)?.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::AlarmState;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ok() -> AlarmReading {
        AlarmReading {
            state: AlarmState::Ok,
            reason: String::new(),
            since: None,
            needs: None,
        }
    }

    #[tokio::test]
    async fn polls_side_by_side_share_one_read_of_every_watched_alarm() {
        let poller = Poller::default();
        let reads = AtomicUsize::new(0);
        let asked = std::sync::Mutex::new(Vec::new());
        let read = |names: Vec<String>| {
            reads.fetch_add(1, Ordering::SeqCst);
            asked.lock().unwrap().push(names.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(names.into_iter().map(|n| (n, ok())).collect())
            }
        };
        let names = |i: usize| vec![format!("alarm-{i}")];
        // Ten fleets ask at once: the first read serves the first, the second read
        // (after it) every alarm watched, which answers the other eight too.
        let polls = (0..10).map(|i| {
            let names = names(i);
            let poller = &poller;
            async move { poller.alarms(&names, read).await.unwrap() }
        });
        let got = futures_util::future::join_all(polls).await;
        for (i, found) in got.iter().enumerate() {
            assert_eq!(found.keys().collect::<Vec<_>>(), [&format!("alarm-{i}")]);
        }
        assert!(
            reads.load(Ordering::SeqCst) <= 2,
            "{:?}",
            asked.lock().unwrap()
        );
        // An alarm that was not found is read again at once.
        let missing = poller
            .alarms(&names(99), |_| async { Ok(BTreeMap::new()) })
            .await
            .unwrap();
        assert!(missing.is_empty());
        let created = poller.alarms(&names(99), read).await.unwrap();
        assert!(created.contains_key("alarm-99"));
    }

    #[tokio::test]
    async fn throttling_slows_the_reads_and_polls_meanwhile_get_the_last_readings() {
        let poller = Poller::default();
        let names = vec!["alarm".to_string()];
        let answers =
            |names: Vec<String>| async move { Ok(names.into_iter().map(|n| (n, ok())).collect()) };
        poller.alarms(&names, answers).await.unwrap();
        tokio::time::sleep(FRESH).await;
        let throttled = || async {
            Err(CloudError::Service {
                operation: "DescribeAlarms",
                code: "Throttling".into(),
                message: "Rate exceeded".into(),
            })
        };
        let reads = AtomicUsize::new(0);
        let counted = |_: Vec<String>| {
            reads.fetch_add(1, Ordering::SeqCst);
            throttled()
        };
        assert!(poller.alarms(&names, counted).await.is_err());
        // Within the wait, no read: the last readings answer.
        for _ in 0..5 {
            let found = poller.alarms(&names, counted).await.unwrap();
            assert!(found.contains_key("alarm"));
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }
}
