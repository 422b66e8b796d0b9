//! One state document shared by rollouts that run side by side (`apply --parallelism`).
//!
//! Each fleet's engine works on its own copy of the state and owns one record in it: its
//! fleet's. A save puts that record into the shared document and writes the document
//! through the real backend, one write at a time, so no fleet's update overwrites
//! another's and every write is still the whole, atomic document. Saves that come while
//! a write is under way are written together by the next one (a group commit): a save
//! returns once a write that holds its record is done, and a hundred fleets saving at
//! once cost a few writes, not a hundred.

use super::{Answer, Backend, LockGuard, LockInfo, State, StateError};
use async_trait::async_trait;

pub struct Shared<'a> {
    backend: &'a dyn Backend,
    /// The document as the fleets made it, and how many changes it has had.
    document: std::sync::Mutex<(State, u64)>,
    /// How many of those changes are written; held while a write is under way.
    written: tokio::sync::Mutex<u64>,
}

impl<'a> Shared<'a> {
    pub fn new(backend: &'a dyn Backend, state: State) -> Self {
        Shared {
            backend,
            document: std::sync::Mutex::new((state, 0)),
            written: tokio::sync::Mutex::new(0),
        }
    }

    fn document(&self) -> std::sync::MutexGuard<'_, (State, u64)> {
        self.document.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the document with every fleet's last record, for a fleet's engine to
    /// work on.
    pub async fn snapshot(&self) -> State {
        self.document().0.clone()
    }

    /// The backend through which `fleet`'s engine saves its record.
    pub fn fleet(&'a self, fleet: &str) -> FleetRecord<'a> {
        FleetRecord {
            shared: self,
            fleet: fleet.to_string(),
        }
    }

    /// The document with every fleet's last record.
    pub fn into_state(self) -> State {
        self.document
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .0
    }
}

/// A backend that saves one fleet's record into the shared document. Everything else
/// (answers, the lock) is the real backend's.
pub struct FleetRecord<'a> {
    shared: &'a Shared<'a>,
    fleet: String,
}

#[async_trait]
impl Backend for FleetRecord<'_> {
    fn describe(&self) -> String {
        self.shared.backend.describe()
    }

    async fn load(&self) -> Result<State, StateError> {
        Ok(self.shared.snapshot().await)
    }

    async fn save(&self, state: &mut State) -> Result<(), StateError> {
        let mine = {
            let mut document = self.shared.document();
            // A record the engine dropped (a retired fleet) goes from the document too.
            match state.fleets.get(&self.fleet) {
                Some(record) => document.0.fleets.insert(self.fleet.clone(), record.clone()),
                None => document.0.fleets.remove(&self.fleet),
            };
            document.1 += 1;
            document.1
        };
        let mut written = self.shared.written.lock().await;
        // A write since this record went in holds it already; else this save writes
        // the document with every record put in so far. A failed write leaves the
        // record for the next save to write: it is only intent until then, and the
        // engine acts on nothing that was not saved.
        if *written < mine {
            let (mut document, changes) = {
                let document = self.shared.document();
                (document.0.clone(), document.1)
            };
            self.shared.backend.save(&mut document).await?;
            self.shared.document().0.serial = document.serial;
            *written = changes;
        }
        state.serial = self.shared.document().0.serial;
        Ok(())
    }

    async fn lock(&self, operation: &str) -> Result<LockGuard, StateError> {
        self.shared.backend.lock(operation).await
    }

    async fn lock_holder(&self) -> Result<Option<LockInfo>, StateError> {
        self.shared.backend.lock_holder().await
    }

    async fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        self.shared.backend.force_unlock(id).await
    }

    async fn post_answer(&self, fleet: &str, answer: &Answer) -> Result<(), StateError> {
        self.shared.backend.post_answer(fleet, answer).await
    }

    async fn pending_answer(&self, fleet: &str, group: &str) -> Result<Option<Answer>, StateError> {
        self.shared.backend.pending_answer(fleet, group).await
    }

    async fn clear_answer(&self, fleet: &str) -> Result<(), StateError> {
        self.shared.backend.clear_answer(fleet).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{FleetState, LocalBackend};
    use proptest::prelude::*;

    fn backend() -> (LocalBackend, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("immune-shared-{}", uuid::Uuid::new_v4()));
        (LocalBackend::new(dir.join("state.json")), dir)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Fleets saving side by side, in any interleaving, lose no update: once a save
        /// returns its record is on disk, the document ends with every fleet's last
        /// record, and saves that met were written together.
        #[test]
        fn interleaved_saves_lose_no_update(
            plan in prop::collection::vec(
                prop::collection::vec((0u8..4, any::<bool>()), 1..8),
                1..6,
            )
        ) {
            let (disk, dir) = backend();
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let saves: usize = plan.iter().map(Vec::len).sum();
            let expected = runtime.block_on(async {
                let shared = Shared::new(&disk, State::new());
                let fleets = plan.iter().enumerate().map(|(i, writes)| {
                    let shared = &shared;
                    let disk = &disk;
                    async move {
                        let name = format!("fleet{i}");
                        let backend = shared.fleet(&name);
                        let mut state = shared.snapshot().await;
                        let mut last = None;
                        for (n, (yields, retire)) in writes.iter().enumerate() {
                            // Another fleet's save may land in between.
                            for _ in 0..*yields {
                                tokio::task::yield_now().await;
                            }
                            match retire {
                                true => {
                                    state.fleets.remove(&name);
                                    last = None;
                                }
                                false => {
                                    let record = FleetState { seq: n as u32 + 1, ..FleetState::default() };
                                    state.fleets.insert(name.clone(), record.clone());
                                    last = Some(record);
                                }
                            }
                            backend.save(&mut state).await.unwrap();
                            let on_disk = disk.load().unwrap();
                            assert_eq!(on_disk.fleets.get(&name), last.as_ref(), "{name} on disk");
                        }
                        (name, last)
                    }
                });
                let ends = futures_util::future::join_all(fleets).await;
                let saved = shared.into_state();
                (ends, saved)
            });
            let (ends, in_memory) = expected;
            let on_disk = disk.load().unwrap();
            prop_assert_eq!(&on_disk, &in_memory);
            prop_assert!(on_disk.serial >= 1 && on_disk.serial <= saves as u64);
            for (name, last) in ends {
                prop_assert_eq!(on_disk.fleets.get(&name), last.as_ref());
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
