//! The state lock, the same for every backend: who holds it is written into the lock (a
//! file or an object), so a refused command can name the holder, a lock left by a
//! process that is gone from this machine can be taken over, and the guard gives it back
//! on every way out of a command.

use super::{process, StateError};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The ID `immune state force-unlock` takes for a lock that cannot be read, which has no
/// ID of its own to give.
pub const CORRUPT_ID: &str = "corrupt";

/// What a lock records about its holder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LockInfo {
    pub id: String,
    pub operation: String,
    pub who: String,
    pub pid: u32,
    /// The machine, since a pid means nothing to an operator on another one.
    pub host: String,
    pub created: String,
    /// The holder's start time (clock ticks since boot), so that a later process that
    /// was given the same pid is not taken for the holder. 0 in older locks.
    pub started: u64,
    /// The kernel boot and pid namespace the pid belongs to; empty in older locks.
    pub pid_space: String,
}

/// Whether a lock's holder still runs, as far as this process can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// On this machine and running.
    Running,
    /// On this machine, and its process is gone: the lock may be taken over.
    Gone,
    /// Cannot be checked from here; says where it is (`on host box`).
    Unknown(String),
}

impl LockInfo {
    /// A fresh lock for `operation` by this process.
    pub fn new(operation: &str) -> Self {
        LockInfo {
            id: uuid::Uuid::new_v4().to_string(),
            operation: operation.to_string(),
            who: super::operator(),
            pid: std::process::id(),
            host: super::hostname(),
            created: super::now(),
            started: process::own_start_time(),
            pid_space: process::pid_space(),
        }
    }

    /// Reads a lock's contents; `None` for anything immune did not write whole, which
    /// names no holder to ask and no ID to break it with.
    pub fn read(text: &str) -> Option<Self> {
        serde_json::from_str::<LockInfo>(text)
            .ok()
            .filter(|info| !info.id.is_empty())
    }

    pub fn to_json(&self) -> String {
        format!(
            "{}\n",
            serde_json::to_string(self).expect("lock info serializes")
        )
    }

    /// Who, doing what, since when, where: `ops (apply since T, pid 42 on box)`.
    pub fn describe(&self) -> String {
        let or_unknown = |s: &str| {
            if s.is_empty() {
                "?".to_string()
            } else {
                s.to_string()
            }
        };
        let host = if self.host.is_empty() {
            String::new()
        } else {
            format!(" on {}", self.host)
        };
        format!(
            "{} ({} since {}, pid {}{host})",
            or_unknown(&self.who),
            or_unknown(&self.operation),
            or_unknown(&self.created),
            self.pid
        )
    }

    /// The refusal a second command gets.
    pub fn held(&self) -> StateError {
        StateError::Locked(Box::new(self.clone()))
    }

    /// A pid can only be checked on the machine, boot and pid namespace it came from;
    /// anywhere else a live holder could look gone.
    pub fn holder(&self) -> Holder {
        let here = super::hostname();
        if self.host.is_empty() || here.is_empty() {
            return Holder::Unknown("on an unnamed host".into());
        }
        if self.host != here {
            return Holder::Unknown(format!("on host {}", self.host));
        }
        if !self.pid_space.is_empty() && self.pid_space != process::pid_space() {
            return Holder::Unknown(format!(
                "on host {}, in another container or before a reboot",
                self.host
            ));
        }
        if self.pid == 0 || !process::can_check() {
            return Holder::Unknown(format!("on host {}, with no pid to check", self.host));
        }
        if !process::exists(self.pid) {
            return Holder::Gone;
        }
        // A pid whose start cannot be read (another user's, under hidepid) counts as
        // the holder: only a different start proves it is another process.
        match process::start_time(self.pid) {
            Some(started) if self.started != 0 && started != self.started => Holder::Gone,
            _ => Holder::Running,
        }
    }
}

/// Whether `immune state force-unlock GIVEN` may remove the lock whose contents are
/// `text`: its holder's ID must match, or `corrupt` for a lock that cannot be read.
pub(crate) fn may_break(text: &str, given: &str, path: &str) -> Result<(), StateError> {
    let held = match LockInfo::read(text) {
        Some(info) => info.id,
        None if given == CORRUPT_ID => return Ok(()),
        None => {
            return Err(StateError::CorruptLock {
                path: path.to_string(),
            })
        }
    };
    if held == given {
        Ok(())
    } else {
        Err(StateError::WrongLockId {
            given: given.to_string(),
            held,
        })
    }
}

/// How a backend gives its lock back.
#[async_trait]
pub(crate) trait Unlock: Send + Sync {
    async fn unlock(&self) -> Result<(), StateError>;
    /// For `Drop`, which cannot await and may run outside any runtime.
    fn unlock_blocking(&self);
}

/// Holds the state lock. Call [`LockGuard::release`] on the way out to hear about a
/// failure; dropping it (early returns, panics, a cancelled future) releases it too.
pub struct LockGuard {
    id: String,
    held: Option<Box<dyn Unlock>>,
    taken_over: Option<LockInfo>,
}

impl LockGuard {
    pub(crate) fn new(id: String, held: Box<dyn Unlock>) -> Self {
        LockGuard {
            id,
            held: Some(held),
            taken_over: None,
        }
    }

    /// Records that this lock replaced one whose holder was gone, for the notice.
    pub(crate) fn replacing(mut self, stale: Option<LockInfo>) -> Self {
        self.taken_over = stale;
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The lock this one replaced because its process was gone, if any.
    pub fn taken_over(&self) -> Option<&LockInfo> {
        self.taken_over.as_ref()
    }

    pub async fn release(mut self) -> Result<(), StateError> {
        match self.held.take() {
            Some(held) => held.unlock().await,
            None => Ok(()),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            held.unlock_blocking();
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A lock as this process would write it, but held by `pid`.
    pub fn held_by(pid: u32) -> LockInfo {
        LockInfo {
            pid,
            started: process::start_time(pid).unwrap_or(0),
            ..LockInfo::new("apply")
        }
    }

    /// The pid of a process that has exited and been reaped.
    pub fn gone_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn a_refusal_names_the_holder_and_the_id() {
        let info = LockInfo {
            id: "abc".into(),
            operation: "apply".into(),
            who: "ops".into(),
            pid: 42,
            host: "box".into(),
            created: "2026-01-01T00:00:00Z".into(),
            ..LockInfo::default()
        };
        let again = LockInfo::read(&info.to_json()).unwrap();
        assert_eq!(again, info);
        let refusal = again.held().to_string();
        assert_eq!(
            refusal,
            "state is locked by ops (apply since 2026-01-01T00:00:00Z, pid 42 on box)\n  run `immune state force-unlock abc` if that process is gone"
        );
    }

    #[test]
    fn an_unreadable_lock_is_corrupt_and_breaks_only_with_the_corrupt_id() {
        for text in ["garbage", "", "{}", "{\"id\": \"\"}", "{\"pid\": 3"] {
            assert_eq!(LockInfo::read(text), None, "{text:?}");
            let err = may_break(text, "abc", "state.lock").unwrap_err();
            assert!(
                err.to_string()
                    .contains("run `immune state force-unlock corrupt`"),
                "{err}"
            );
            may_break(text, CORRUPT_ID, "state.lock").unwrap();
        }
        let readable = LockInfo::new("apply");
        let json = readable.to_json();
        may_break(&json, &readable.id, "state.lock").unwrap();
        assert!(matches!(
            may_break(&json, CORRUPT_ID, "state.lock"),
            Err(StateError::WrongLockId { .. })
        ));
    }

    #[test]
    fn a_holder_is_gone_only_when_its_process_on_this_machine_is() {
        assert_eq!(held_by(std::process::id()).holder(), Holder::Running);
        assert_eq!(held_by(gone_pid()).holder(), Holder::Gone);

        // A pid now used by a later process than the one that took the lock.
        let reused = LockInfo {
            started: process::own_start_time() - 1,
            ..held_by(std::process::id())
        };
        assert_eq!(reused.holder(), Holder::Gone);

        // An older lock records neither start time nor pid space: the host decides.
        let older = LockInfo {
            started: 0,
            pid_space: String::new(),
            ..held_by(gone_pid())
        };
        assert_eq!(older.holder(), Holder::Gone);

        let elsewhere = LockInfo {
            host: "another-box".into(),
            ..held_by(gone_pid())
        };
        assert_eq!(
            elsewhere.holder(),
            Holder::Unknown("on host another-box".into())
        );
        let other_container = LockInfo {
            pid_space: "another-boot/pid:[1]".into(),
            ..held_by(gone_pid())
        };
        assert!(matches!(other_container.holder(), Holder::Unknown(_)));
    }
}
