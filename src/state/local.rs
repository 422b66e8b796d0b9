//! The local backend: a JSON file written atomically (temp file, fsync, rename, 0600) and
//! a lock file beside it that names who holds it. Its operations are synchronous; the
//! [`Backend`] implementation wraps them.

use super::lock::{LockInfo, Unlock};
use super::{Answer, Backend, LockGuard, State, StateError};
use async_trait::async_trait;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct LocalBackend {
    path: PathBuf,
}

/// The lock file to remove when the guard is released.
struct LockFile(PathBuf);

#[async_trait]
impl Unlock for LockFile {
    async fn unlock(&self) -> Result<(), StateError> {
        match fs::remove_file(&self.0) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StateError::Write {
                path: self.0.display().to_string(),
                message: e.to_string(),
            }),
            _ => Ok(()),
        }
    }

    fn unlock_blocking(&self) {
        let _ = fs::remove_file(&self.0);
    }
}

impl LocalBackend {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LocalBackend { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_path(&self) -> PathBuf {
        self.path.with_extension("lock")
    }

    pub fn load(&self) -> Result<State, StateError> {
        let shown = self.path.display().to_string();
        match fs::read_to_string(&self.path) {
            Ok(text) => super::decode(&text, &shown),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::new()),
            Err(e) => Err(StateError::Read {
                path: shown,
                message: e.to_string(),
            }),
        }
    }

    /// Writes the next serial of `state` so that a reader sees either the old document or
    /// the new one, never a torn write.
    pub fn save(&self, state: &mut State) -> Result<(), StateError> {
        state.serial += 1;
        write_atomically(&self.path, &super::encode(state))
    }

    /// Breaks a lock left by a process that is gone. The ID must match, so that a lock
    /// taken since the operator looked is not broken by mistake.
    pub fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        let path = self.lock_path();
        let held = match fs::read_to_string(&path) {
            Ok(text) => LockInfo::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotLocked)
            }
            Err(e) => {
                return Err(StateError::Read {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })
            }
        };
        if held.id != id {
            return Err(StateError::WrongLockId {
                given: id.to_string(),
                held: held.id,
            });
        }
        fs::remove_file(&path).map_err(|e| StateError::Write {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Takes the lock or says who holds it.
    pub fn lock(&self, operation: &str) -> Result<LockGuard, StateError> {
        let path = self.lock_path();
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| StateError::Write {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        }
        let info = LockInfo::new(operation);
        match private_file(&path, false) {
            Ok(mut file) => {
                let _ = file.write_all(info.to_json().as_bytes());
                Ok(LockGuard::new(info.id, Box::new(LockFile(path))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = fs::read_to_string(&path).unwrap_or_default();
                Err(LockInfo::parse(&text).held())
            }
            Err(e) => Err(StateError::Write {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
        }
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    async fn load(&self) -> Result<State, StateError> {
        LocalBackend::load(self)
    }

    async fn save(&self, state: &mut State) -> Result<(), StateError> {
        LocalBackend::save(self, state)
    }

    async fn lock(&self, operation: &str) -> Result<LockGuard, StateError> {
        LocalBackend::lock(self, operation)
    }

    async fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        LocalBackend::force_unlock(self, id)
    }

    async fn post_answer(&self, fleet: &str, answer: &Answer) -> Result<(), StateError> {
        LocalBackend::post_answer(self, fleet, answer)
    }

    async fn pending_answer(&self, fleet: &str, group: &str) -> Result<Option<Answer>, StateError> {
        LocalBackend::pending_answer(self, fleet, group)
    }

    async fn clear_answer(&self, fleet: &str) -> Result<(), StateError> {
        LocalBackend::clear_answer(self, fleet)
    }
}

/// Writes `text` to `path` (0600) through a temp file, fsync and rename, so a reader
/// sees the old file or the new one, never a torn write.
pub(super) fn write_atomically(path: &Path, text: &str) -> Result<(), StateError> {
    let failed = |e: std::io::Error| StateError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(failed)?;
    }
    let temp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = private_file(&temp, true).map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    fs::rename(&temp, path).map_err(failed)
}

fn private_file(path: &Path, truncate: bool) -> std::io::Result<fs::File> {
    let mut options = OpenOptions::new();
    options.write(true);
    if truncate {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_atomically_with_increasing_serial_and_private_mode() {
        let dir = std::env::temp_dir().join(format!("immune-state-{}", uuid::Uuid::new_v4()));
        let backend = LocalBackend::new(dir.join("state.json"));
        let mut state = backend.load().unwrap();
        assert_eq!(state.serial, 0);
        backend.save(&mut state).unwrap();
        backend.save(&mut state).unwrap();
        let read = backend.load().unwrap();
        assert_eq!((read.serial, &read.lineage), (2, &state.lineage));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(backend.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers = fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary files are left behind");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holder() {
        let dir = std::env::temp_dir().join(format!("immune-lock-{}", uuid::Uuid::new_v4()));
        let backend = LocalBackend::new(dir.join("state.json"));
        let guard = backend.lock("apply").unwrap();
        match backend.lock("apply") {
            Err(StateError::Locked { holder, .. }) => assert!(holder.contains("apply")),
            other => panic!("expected Locked, got {:?}", other.map(|_| ())),
        }
        drop(guard);
        let _stale = std::mem::ManuallyDrop::new(backend.lock("apply").unwrap());
        let id = match backend.lock("plan") {
            Err(StateError::Locked { id, .. }) => id,
            _ => panic!("expected Locked"),
        };
        assert!(matches!(
            backend.force_unlock("not-the-id"),
            Err(StateError::WrongLockId { .. })
        ));
        backend.force_unlock(&id).unwrap();
        assert!(backend.lock("apply").is_ok());
        fs::remove_dir_all(dir).unwrap();
    }
}
