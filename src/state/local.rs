//! The local backend: a JSON file written atomically (temp file, fsync, rename, 0600), the
//! previous document kept beside it as `<file>.backup`, and a lock file that names who
//! holds it. Its operations are synchronous; the [`Backend`] implementation wraps them.

use super::lock::{self, Holder, LockInfo, Unlock};
use super::{process, Answer, Backend, LockGuard, State, StateError};
use async_trait::async_trait;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub struct LocalBackend {
    path: PathBuf,
}

/// The lock file this process created, to remove when the guard is released.
struct LockFile {
    path: PathBuf,
    id: String,
}

impl LockFile {
    /// Removes the lock if it is still ours: after a `force-unlock` someone else's lock
    /// may stand there.
    fn remove(&self) -> Result<(), StateError> {
        let ours = fs::read_to_string(&self.path)
            .ok()
            .and_then(|text| LockInfo::read(&text))
            .is_some_and(|held| held.id == self.id);
        if !ours {
            return Ok(());
        }
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StateError::Write {
                path: self.path.display().to_string(),
                message: e.to_string(),
            }),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Unlock for LockFile {
    async fn unlock(&self) -> Result<(), StateError> {
        self.remove()
    }

    fn unlock_blocking(&self) {
        let _ = self.remove();
    }
}

impl LocalBackend {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LocalBackend { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory of the state file, where its lock and temp files are.
    pub(super) fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    fn lock_path(&self) -> PathBuf {
        self.path.with_extension("lock")
    }

    /// `state.json.backup`, as Terraform keeps `terraform.tfstate.backup`.
    pub fn backup_path(&self) -> PathBuf {
        let mut name = OsString::from(self.path.as_os_str());
        name.push(".backup");
        PathBuf::from(name)
    }

    pub fn load(&self) -> Result<State, StateError> {
        let shown = self.path.display().to_string();
        match fs::read_to_string(&self.path) {
            Ok(text) => super::decode(&text, &shown),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::new()),
            Err(e) => Err(StateError::Read {
                path: shown,
                message: e.to_string(),
            }),
        }
    }

    /// Writes the next serial of `state` so that a reader sees either the old document or
    /// the new one, never a torn write. The old one is kept as the backup first, so a
    /// document someone broke by hand (or a bad write) can be put back.
    pub fn save(&self, state: &mut State) -> Result<(), StateError> {
        state.serial += 1;
        write_with_backup(&self.path, &self.backup_path(), &super::encode(state))
    }

    /// The lock file's contents, or `None` when there is no lock.
    fn read_lock(&self) -> Result<Option<String>, StateError> {
        let path = self.lock_path();
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StateError::Read {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
        }
    }

    fn remove_lock(&self) -> Result<(), StateError> {
        let path = self.lock_path();
        fs::remove_file(&path).map_err(|e| StateError::Write {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Held by whoever removes a lock that is not its own (a takeover, `force-unlock`),
    /// so that two of them cannot both act on what they read: the second would remove
    /// the lock the first just took. It is an advisory lock on the state's directory,
    /// which the kernel drops with the process, so it never goes stale itself.
    fn breaking(&self) -> Result<fs::File, StateError> {
        let dir = self.dir();
        let failed = |e: io::Error| StateError::Write {
            path: dir.display().to_string(),
            message: format!("cannot lock the directory to break the state lock: {e}"),
        };
        let handle = fs::File::open(&dir).map_err(failed)?;
        handle.lock().map_err(failed)?;
        Ok(handle)
    }

    /// Breaks a lock left by a process that is gone. The ID must match, so that a lock
    /// taken since the operator looked is not broken by mistake; `corrupt` breaks a lock
    /// that cannot be read.
    pub fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        let _breaking = self.breaking()?;
        let text = self.read_lock()?.ok_or(StateError::NotLocked)?;
        lock::may_break(&text, id, &self.lock_path().display().to_string())?;
        self.remove_lock()
    }

    /// Who holds the lock, without taking it.
    pub fn lock_holder(&self) -> Result<Option<LockInfo>, StateError> {
        let Some(text) = self.read_lock()? else {
            return Ok(None);
        };
        LockInfo::read(&text)
            .map(Some)
            .ok_or_else(|| StateError::CorruptLock {
                path: self.lock_path().display().to_string(),
            })
    }

    /// Takes the lock or says who holds it. A lock left by a process that is gone from
    /// this machine is taken over.
    pub fn lock(&self, operation: &str) -> Result<LockGuard, StateError> {
        let path = self.lock_path();
        let failed = |e: io::Error| StateError::Write {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        fs::create_dir_all(self.dir()).map_err(failed)?;
        let info = LockInfo::new(operation);
        let mut taken_over = None;
        // A lock that vanishes between the refused create and the read was just
        // released, or broken as stale: try again, a few times.
        for _ in 0..3 {
            if self.create_lock(&info).map_err(failed)? {
                self.remove_leftovers();
                let file = LockFile {
                    path,
                    id: info.id.clone(),
                };
                return Ok(LockGuard::new(info.id, Box::new(file)).replacing(taken_over));
            }
            let Some(held) = self.lock_holder()? else {
                continue;
            };
            if held.holder() != Holder::Gone {
                return Err(held.held());
            }
            if self.break_stale(&held)? {
                taken_over = Some(held);
            }
        }
        Err(StateError::Write {
            path: path.display().to_string(),
            message: "the lock was taken and released several times while immune tried to take it; try again".into(),
        })
    }

    /// Removes `stale` if it is still the lock. Two processes may find the same stale
    /// lock; only the first removes it, and the second then finds the first's lock.
    fn break_stale(&self, stale: &LockInfo) -> Result<bool, StateError> {
        let _breaking = self.breaking()?;
        let still = self
            .read_lock()?
            .and_then(|text| LockInfo::read(&text))
            .is_some_and(|held| held.id == stale.id);
        if still {
            self.remove_lock()?;
        }
        Ok(still)
    }

    /// Creates the lock file with its contents in one step, so that no reader finds it
    /// empty or half written: the contents go to a temp file, which is then linked to
    /// the lock's name (a link is refused when the name exists). `false` when the lock
    /// exists. Where links are not supported the file is created, then written.
    fn create_lock(&self, info: &LockInfo) -> io::Result<bool> {
        let path = self.lock_path();
        // Named for this lock too, not only this process: two takers in one process
        // (threads) must not write each other's file.
        let temp = path.with_extension(format!(
            "lock-{}.tmp.{}",
            info.id.get(..8).unwrap_or(&info.id),
            std::process::id()
        ));
        let written = private_file(&temp, true)
            .and_then(|mut file| file.write_all(info.to_json().as_bytes()))
            .and_then(|()| fs::hard_link(&temp, &path));
        let _ = fs::remove_file(&temp);
        match written {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(_) => match private_file(&path, false) {
                Ok(mut file) => file.write_all(info.to_json().as_bytes()).map(|()| true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            },
        }
    }

    /// Removes temp files (`state.tmp.PID`, `answers/web.tmp.PID`, ...) left by processes
    /// killed while writing. A live process's are left alone: it may be writing them.
    fn remove_leftovers(&self) {
        if !process::can_check() {
            return;
        }
        let stem = self.path.file_stem().unwrap_or_default().to_string_lossy();
        let ours = format!("{stem}.");
        for (dir, prefix) in [(self.dir(), ours.as_str()), (self.answers_dir(), "")] {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let left_by = Some(&name)
                    .filter(|name| name.starts_with(prefix))
                    .and_then(|name| name.rsplit_once(".tmp."))
                    .and_then(|(_, pid)| pid.parse::<u32>().ok());
                if left_by.is_some_and(|pid| !process::exists(pid)) {
                    let _ = fs::remove_file(entry.path());
                }
            }
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

    /// The files are written on a blocking thread: rollouts side by side go on while
    /// one fleet's save waits for the disk, and their saves meanwhile are written
    /// together by the next write (see `Shared`).
    async fn save(&self, state: &mut State) -> Result<(), StateError> {
        state.serial += 1;
        let text = super::encode(state);
        let (path, backup) = (self.path.clone(), self.backup_path());
        let shown = path.display().to_string();
        tokio::task::spawn_blocking(move || write_with_backup(&path, &backup, &text))
            .await
            .unwrap_or_else(|e| {
                Err(StateError::Write {
                    path: shown,
                    message: e.to_string(),
                })
            })
    }

    async fn lock(&self, operation: &str) -> Result<LockGuard, StateError> {
        LocalBackend::lock(self, operation)
    }

    async fn lock_holder(&self) -> Result<Option<LockInfo>, StateError> {
        LocalBackend::lock_holder(self)
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

/// Keeps the document at `path` as `backup`, then writes `text` in its place: a document
/// someone broke by hand (or a bad write) can be put back.
fn write_with_backup(path: &Path, backup: &Path, text: &str) -> Result<(), StateError> {
    match fs::read_to_string(path) {
        Ok(previous) => write_atomically(backup, &previous)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(StateError::Read {
                path: path.display().to_string(),
                message: e.to_string(),
            })
        }
    }
    write_atomically(path, text)
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
    use super::super::lock::tests::{gone_pid, held_by};
    use super::*;

    fn scratch(name: &str) -> (PathBuf, LocalBackend) {
        let dir = std::env::temp_dir().join(format!("immune-{name}-{}", uuid::Uuid::new_v4()));
        let backend = LocalBackend::new(dir.join("state.json"));
        (dir, backend)
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn saves_atomically_with_increasing_serial_private_mode_and_a_backup() {
        let (dir, backend) = scratch("state");
        let mut state = backend.load().unwrap();
        assert_eq!(state.serial, 0);
        backend.save(&mut state).unwrap();
        assert!(!backend.backup_path().exists(), "nothing to back up yet");
        backend.save(&mut state).unwrap();
        let read = backend.load().unwrap();
        assert_eq!((read.serial, &read.lineage), (2, &state.lineage));
        let backup = LocalBackend::new(backend.backup_path()).load().unwrap();
        assert_eq!(
            backup.serial, 1,
            "the backup is the document before the last save"
        );
        #[cfg(unix)]
        {
            assert_eq!(mode(backend.path()), 0o600);
            assert_eq!(mode(&backend.backup_path()), 0o600);
        }
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["state.json", "state.json.backup"],
            "no temporary files are left behind"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holder() {
        let (dir, backend) = scratch("lock");
        let guard = backend.lock("apply").unwrap();
        assert!(guard.taken_over().is_none());
        match backend.lock("apply") {
            Err(StateError::Locked(holder)) => assert_eq!(holder.id, guard.id()),
            other => panic!("expected Locked, got {:?}", other.map(|_| ())),
        }
        assert_eq!(backend.lock_holder().unwrap().unwrap().id, guard.id());
        drop(guard);
        assert_eq!(backend.lock_holder().unwrap(), None);
        let _stale = std::mem::ManuallyDrop::new(backend.lock("apply").unwrap());
        let id = match backend.lock("plan") {
            Err(StateError::Locked(holder)) => holder.id,
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

    fn leave_lock(backend: &LocalBackend, info: &LockInfo) {
        fs::create_dir_all(backend.dir()).unwrap();
        fs::write(backend.lock_path(), info.to_json()).unwrap();
    }

    #[test]
    fn a_lock_whose_process_is_gone_is_taken_over_and_a_live_ones_is_not() {
        let (dir, backend) = scratch("takeover");
        let stale = held_by(gone_pid());
        leave_lock(&backend, &stale);
        let guard = backend.lock("apply").unwrap();
        assert_eq!(guard.taken_over(), Some(&stale));
        assert_eq!(backend.lock_holder().unwrap().unwrap().id, guard.id());
        drop(guard);

        let mut live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        leave_lock(&backend, &held_by(live.id()));
        let refused = backend.lock("apply");
        live.kill().unwrap();
        live.wait().unwrap();
        assert!(matches!(refused, Err(StateError::Locked(_))));

        let elsewhere = LockInfo {
            host: "another-box".into(),
            ..held_by(gone_pid())
        };
        leave_lock(&backend, &elsewhere);
        assert!(matches!(backend.lock("apply"), Err(StateError::Locked(_))));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn of_processes_taking_over_one_stale_lock_exactly_one_gets_it() {
        const TAKERS: usize = 8;
        for _ in 0..5 {
            let (dir, backend) = scratch("takers");
            leave_lock(&backend, &held_by(gone_pid()));
            let start = std::sync::Barrier::new(TAKERS);
            let won: Vec<bool> = std::thread::scope(|scope| {
                let takers: Vec<_> = (0..TAKERS)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            // Held, not dropped, until every taker has tried.
                            backend.lock("apply").map(std::mem::ManuallyDrop::new)
                        })
                    })
                    .collect();
                takers
                    .into_iter()
                    .map(|t| match t.join().unwrap() {
                        Ok(_) => true,
                        Err(StateError::Locked(_)) => false,
                        Err(e) => panic!("a refused taker is told who holds it, not {e}"),
                    })
                    .collect()
            });
            assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
            fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn a_corrupt_lock_refuses_and_force_unlock_corrupt_removes_it() {
        let (dir, backend) = scratch("corrupt");
        fs::create_dir_all(&dir).unwrap();
        fs::write(backend.lock_path(), "").unwrap();
        let err = backend.lock("apply").err().expect("refused");
        assert!(matches!(err, StateError::CorruptLock { .. }), "{err}");
        assert!(
            err.to_string().contains("state.lock cannot be read"),
            "{err}"
        );
        assert!(matches!(
            backend.force_unlock("?"),
            Err(StateError::CorruptLock { .. })
        ));
        backend.force_unlock(lock::CORRUPT_ID).unwrap();
        assert!(backend.lock("apply").is_ok());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn taking_the_lock_removes_temp_files_of_gone_processes_only() {
        let (dir, backend) = scratch("leftovers");
        fs::create_dir_all(dir.join("answers")).unwrap();
        let gone = gone_pid();
        let live = std::process::id();
        let files = [
            format!("state.tmp.{gone}"),
            format!("state.json.tmp.{gone}"),
            format!("answers/web.tmp.{gone}"),
            format!("state.tmp.{live}"),
            format!("other.tmp.{gone}"),
            "state.json".to_string(),
        ];
        for name in &files {
            fs::write(dir.join(name), "{}").unwrap();
        }
        drop(backend.lock("apply").unwrap());
        let left: Vec<&String> = files.iter().filter(|n| dir.join(n).exists()).collect();
        assert_eq!(
            left,
            [&files[3], &files[4], &files[5]],
            "a live process's temp file, another file's and the state stay"
        );
        fs::remove_dir_all(dir).unwrap();
    }
}
