//! The builder's side of a bake. The provision script runs as the builder's user data,
//! inside a wrapper that powers the builder off once the script succeeded: a stopped
//! builder is how immune knows the image can be taken. A script that fails leaves the
//! builder running and says so on the console, where immune looks for it.

use sha2::{Digest, Sha256};

/// Printed by the wrapper on the console when the provision script exits non-zero.
pub const FAILED_MARKER: &str = "immune-bake: provision failed";

/// EC2 takes at most 16 KiB of user data, before base64.
pub const USER_DATA_MAX: usize = 16 * 1024;

/// The builder's user data: the wrapper with the provision script inside, unchanged.
pub fn user_data(provision: Option<&str>) -> String {
    let script = provision.unwrap_or("");
    // The here-document ends at a line no script writes by chance.
    let digest = Sha256::digest(script.as_bytes());
    let end: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let end = format!("IMMUNE_PROVISION_END_{end}");
    let newline = if script.is_empty() || script.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    format!(
        r#"#!/bin/sh
# Written by immune. Runs the provision script below, then powers this builder off:
# that is how immune knows the image can be taken. A script that fails leaves the
# builder running, and immune reports the end of this console.
say() {{ echo "immune-bake: $*"; echo "immune-bake: $*" 2>/dev/null >/dev/console || true; }}
dir=/var/lib/immune-bake
mkdir -p "$dir"
cat >"$dir/provision" <<'{end}'
{script}{newline}{end}
chmod 700 "$dir/provision"
say "provision started"
case "$(head -c 2 "$dir/provision")" in
  '#!') "$dir/provision" ;;
  *) /bin/sh "$dir/provision" ;;
esac
status=$?
rm -rf "$dir"
if [ "$status" -ne 0 ]; then
  say "provision failed with exit status $status"
  exit "$status"
fi
say "provision succeeded; powering off"
# The image must not carry the script (it may hold secrets) nor cloud-init's record of
# this boot: instances launched from it run their own user data.
if command -v cloud-init >/dev/null 2>&1; then cloud-init clean --logs >/dev/null 2>&1 || true; fi
sync
poweroff || shutdown -h now
"#
    )
}

/// The wrapper's failure line, when the console shows one.
pub fn failure_in(console: &str) -> Option<&str> {
    console
        .lines()
        .find(|line| line.contains(FAILED_MARKER))
        .map(str::trim)
}

/// The last `count` non-empty lines of a console, indented for an error message.
pub fn tail(console: &str, count: usize) -> String {
    let lines: Vec<&str> = console
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    if lines.is_empty() {
        return "    (the console is empty so far)".into();
    }
    lines[lines.len().saturating_sub(count)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs the wrapper with `sh`, with `poweroff` replaced by a marker file, and says
    /// whether it "powered off" and what it printed.
    fn run(provision: &str) -> (bool, String) {
        let dir = std::env::temp_dir().join(format!("immune-bake-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let wrapper = user_data(Some(provision))
            .replace(
                "/var/lib/immune-bake",
                &dir.join("work").display().to_string(),
            )
            .replace(
                "poweroff || shutdown -h now",
                &format!("touch {}/off", dir.display()),
            )
            .replace("cloud-init clean", "true");
        let out = Command::new("sh").arg("-c").arg(&wrapper).output().unwrap();
        let printed = String::from_utf8_lossy(&out.stdout).into_owned();
        let off = dir.join("off").exists();
        std::fs::remove_dir_all(&dir).unwrap();
        (off, printed)
    }

    #[test]
    fn a_script_that_succeeds_powers_the_builder_off() {
        let (off, printed) = run("#!/bin/sh\necho installing\n");
        assert!(off, "{printed}");
        assert!(printed.contains("installing"));
        assert!(printed.contains("provision succeeded"));
    }

    #[test]
    fn a_script_that_fails_leaves_the_builder_running_and_says_so() {
        let (off, printed) = run("echo half way\nexit 3");
        assert!(!off);
        assert_eq!(
            failure_in(&printed),
            Some("immune-bake: provision failed with exit status 3")
        );
    }

    #[test]
    fn the_script_is_carried_unchanged_even_when_it_looks_like_the_wrapper() {
        let tricky = "#!/bin/sh\ncat <<'EOF'\n$HOME `x` IMMUNE_PROVISION_END\nEOF\n";
        let (off, printed) = run(tricky);
        assert!(off);
        assert!(
            printed.contains("$HOME `x` IMMUNE_PROVISION_END"),
            "{printed}"
        );
    }

    #[test]
    fn no_script_still_powers_off() {
        let (off, _) = run("");
        assert!(off);
    }

    #[test]
    fn the_tail_keeps_the_last_lines() {
        assert_eq!(tail("a\n\nb\nc\n", 2), "    b\n    c");
        assert!(tail("", 5).contains("empty"));
    }
}
