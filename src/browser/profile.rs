//! The private temporary profile (user data dir) of a launched browser, and the removal
//! of profiles that a dead process left behind.
//!
//! Each profile is a `cdpmux-profile-*` directory in the temporary directory, mode 0700,
//! holding an owner file that names the process that made it (pid and, on Linux, its
//! start time, so a reused pid is not mistaken for the owner). At every launch, profiles
//! whose owner is dead are removed.
//!
//! What the sweep must never do: touch a directory that is not ours (another user's, a
//! symlink, one without an owner file, which may be one being created right now) or one
//! whose owner still runs.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use tempfile::TempDir;

use super::process::euid;
use crate::error::{Error, ErrorKind, Result};

/// Name prefix of every profile directory.
pub(super) const PREFIX: &str = "cdpmux-profile-";
/// The owner file inside a profile.
const OWNER_FILE: &str = "cdpmux-owner";
/// An owner file is a few dozen bytes; anything longer is not ours.
const OWNER_FILE_MAX: u64 = 256;

/// A process as the owner file names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Owner {
    pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22); `None` where
    /// it cannot be read.
    start: Option<u64>,
}

impl Owner {
    fn this_process() -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            start: start_time(pid),
        }
    }

    fn render(&self) -> String {
        match self.start {
            Some(start) => format!("pid {}\nstart {start}\n", self.pid),
            None => format!("pid {}\n", self.pid),
        }
    }

    fn parse(text: &str) -> Option<Owner> {
        let mut pid = None;
        let mut start = None;
        for line in text.lines() {
            match line.split_once(' ')? {
                ("pid", v) => pid = Some(v.parse().ok()?),
                ("start", v) => start = Some(v.parse().ok()?),
                _ => return None,
            }
        }
        Some(Owner { pid: pid?, start })
    }

    /// True while the process still runs (and is the same process, where start times
    /// can be compared). A process we may not signal counts as alive.
    fn is_alive(&self) -> bool {
        if self.pid == 0 || libc::pid_t::try_from(self.pid).is_err() {
            return false;
        }
        if cfg!(target_os = "linux") {
            return match proc_stat(self.pid) {
                None => false,
                Some((state, _)) if state == 'Z' || state == 'X' => false,
                Some((_, now)) => self.start.is_none() || now == self.start,
            };
        }
        // SAFETY: kill(2) with signal 0 only checks for existence.
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, 0) };
        rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

/// State and start time of a process, from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(char, Option<u64>)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces or parens; start is field 22.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.nth(18).and_then(|s| s.parse().ok())))
}

fn start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).and_then(|(_, start)| start)
}

/// A fresh profile directory only we can read, checked rather than assumed, with its
/// owner file written. Stale profiles of dead processes are removed first.
pub(super) fn create() -> Result<TempDir> {
    sweep(&std::env::temp_dir());
    let io_err = |what: &str, e: io::Error| {
        Error::new(
            ErrorKind::Io,
            format!("cannot create a private browser profile: {what}"),
        )
        .with_source(e)
    };
    let dir = tempfile::Builder::new()
        .prefix(PREFIX)
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir()
        .map_err(|e| io_err("creating the temporary directory", e))?;
    let meta = fs::symlink_metadata(dir.path()).map_err(|e| io_err("inspecting it", e))?;
    let mode = meta.mode() & 0o7777;
    if !meta.is_dir() || mode != 0o700 || meta.uid() != euid() {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "browser profile {} is not private (mode {mode:o}, owner {}); check the \
                 temporary directory (TMPDIR)",
                dir.path().display(),
                meta.uid()
            ),
        ));
    }
    write_owner(dir.path(), &Owner::this_process())
        .map_err(|e| io_err("writing its owner file", e))?;
    Ok(dir)
}

fn write_owner(profile: &Path, owner: &Owner) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(profile.join(OWNER_FILE))?;
    file.write_all(owner.render().as_bytes())
}

/// The owner named in `profile`, if it is a profile of ours: a real directory of this
/// user holding a well-formed owner file.
fn owner_of(profile: &Path) -> Option<Owner> {
    let meta = fs::symlink_metadata(profile).ok()?;
    if !meta.is_dir() || meta.uid() != euid() {
        return None;
    }
    let file = profile.join(OWNER_FILE);
    let meta = fs::symlink_metadata(&file).ok()?;
    if !meta.is_file() || meta.uid() != euid() || meta.len() > OWNER_FILE_MAX {
        return None;
    }
    let mut text = String::new();
    File::open(&file)
        .ok()?
        .take(OWNER_FILE_MAX)
        .read_to_string(&mut text)
        .ok()?;
    Owner::parse(&text)
}

/// Removes the profiles in `dir` left by dead owners; returns how many. Errors are
/// logged, never returned: a leftover must not stop a launch.
pub(super) fn sweep(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let path = entry.path();
        let Some(owner) = owner_of(&path) else {
            continue;
        };
        if owner.is_alive() {
            continue;
        }
        match fs::remove_dir_all(&path) {
            Ok(()) => {
                removed += 1;
                tracing::info!(profile = %path.display(), owner = owner.pid, "removed the browser profile of a dead process");
            }
            // Another process swept it first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(profile = %path.display(), error = %e, "could not remove a stale browser profile")
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid that was ours and has exited (and been reaped).
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    fn fake_profile(root: &Path, name: &str, owner: Option<&str>) -> std::path::PathBuf {
        let dir = root.join(format!("{PREFIX}{name}"));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("Cookies"), "secret").unwrap();
        if let Some(text) = owner {
            fs::write(dir.join(OWNER_FILE), text).unwrap();
        }
        dir
    }

    #[test]
    fn profiles_are_private_and_name_their_owner() {
        let dir = create().unwrap();
        let mode = fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let owner = owner_of(dir.path()).expect("an owner file");
        assert_eq!(owner, Owner::this_process());
        assert!(owner.is_alive());
        let file_mode = fs::metadata(dir.path().join(OWNER_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(file_mode & 0o777, 0o600);
    }

    #[test]
    fn sweep_removes_only_dead_owners_profiles() {
        let root = tempfile::tempdir().unwrap();
        let me = Owner::this_process();
        let dead = fake_profile(root.path(), "dead", Some(&format!("pid {}\n", dead_pid())));
        let reused = Owner {
            pid: me.pid,
            start: me.start.map(|s| s + 1),
        };
        let reused_pid = fake_profile(root.path(), "reused", Some(&reused.render()));
        let alive = fake_profile(root.path(), "alive", Some(&me.render()));
        let unowned = fake_profile(root.path(), "unowned", None);
        let garbage = fake_profile(root.path(), "garbage", Some("pid x\n"));
        let other_name = root.path().join("not-a-profile");
        fs::create_dir(&other_name).unwrap();
        fs::write(other_name.join(OWNER_FILE), format!("pid {}\n", dead_pid())).unwrap();
        let link = root.path().join(format!("{PREFIX}link"));
        std::os::unix::fs::symlink(&dead, &link).unwrap();

        let removed = sweep(root.path());

        assert!(!dead.exists(), "a dead owner's profile is removed");
        let expect_reused_gone = cfg!(target_os = "linux") && me.start.is_some();
        assert_eq!(
            !reused_pid.exists(),
            expect_reused_gone,
            "pid reuse is seen"
        );
        assert_eq!(removed, 1 + usize::from(expect_reused_gone));
        for kept in [&alive, &unowned, &garbage, &other_name] {
            assert!(kept.exists(), "{} must stay", kept.display());
        }
        assert!(
            fs::symlink_metadata(&link).is_ok(),
            "symlinks are not followed"
        );
    }

    #[test]
    fn sweep_skips_other_users_profiles() {
        // Only root can make a directory owned by someone else.
        if euid() != 0 {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let theirs = fake_profile(
            root.path(),
            "theirs",
            Some(&format!("pid {}\n", dead_pid())),
        );
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        assert_eq!(sweep(root.path()), 0);
        assert!(theirs.exists());
    }

    #[test]
    fn owner_files_parse_strictly() {
        assert_eq!(
            Owner::parse("pid 12\nstart 34\n"),
            Some(Owner {
                pid: 12,
                start: Some(34)
            })
        );
        assert_eq!(
            Owner::parse("pid 12\n"),
            Some(Owner {
                pid: 12,
                start: None
            })
        );
        for bad in [
            "",
            "start 1\n",
            "pid\n",
            "pid -1\n",
            "pid 1\nother 2\n",
            "pid 1 2\n",
        ] {
            assert_eq!(Owner::parse(bad), None, "{bad:?}");
        }
    }
}
