//! Whether a process named in a lock or a temp file still runs, read from `/proc`: a lock
//! left by a killed apply on this machine can then be taken over instead of needing
//! `force-unlock` (issue 10). Without `/proc` nothing is ever judged gone.

use std::fs;
use std::path::Path;

/// Whether this machine can tell a live process from a gone one.
pub(super) fn can_check() -> bool {
    Path::new("/proc/self/stat").exists()
}

/// Whether a process with this pid exists now (any process: pids are reused).
pub(super) fn exists(pid: u32) -> bool {
    pid != 0 && Path::new(&format!("/proc/{pid}")).exists()
}

/// When the process started, in clock ticks since boot (field 22 of `/proc/PID/stat`).
/// Together with the pid it names one process: a pid reused by a later process has a
/// later start.
pub(super) fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// This process's own start time, 0 when unknown.
pub(super) fn own_start_time() -> u64 {
    start_time(std::process::id()).unwrap_or(0)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so fields are
    // counted from the last `)`; the state is field 3, the start time field 22.
    let (_, fields) = stat.rsplit_once(')')?;
    fields.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Which pids a pid means: the kernel boot and the pid namespace it was read in. Two
/// containers may share a host name but not this; empty when it cannot be read.
pub(super) fn pid_space() -> String {
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let namespace = fs::read_link("/proc/self/ns/pid").unwrap_or_default();
    let (boot, namespace) = (boot.trim(), namespace.display().to_string());
    if boot.is_empty() || namespace.is_empty() {
        String::new()
    } else {
        format!("{boot}/{namespace}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (im mune) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 3 1 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("4242 (short) S 1"), None);
    }

    #[test]
    fn this_process_exists_and_a_reaped_child_does_not() {
        assert!(can_check(), "these tests run where /proc exists");
        assert!(exists(std::process::id()));
        assert_ne!(own_start_time(), 0);
        assert!(!pid_space().is_empty());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!exists(pid), "pid {pid} is gone once reaped");
        assert!(!exists(0));
    }
}
