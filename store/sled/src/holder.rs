//! Who holds a store: the process owning the lock on sled's `db` file, named in the "store
//! in use" error so a user knows what to stop or wait for.
//!
//! sled takes an exclusive `flock` on `<store>/sled/db` for as long as the store is open.
//! The kernel's own table of locks, `/proc/locks` (Linux), lists each lock with the pid
//! that took it and the device and inode of the locked file; the holder is the lock on the
//! `db` file's inode. Its command line is `/proc/<pid>/cmdline`. This asks the kernel, so
//! it cannot be stale: a crashed holder has no lock and is never named. (A pid file written
//! by the opener would have to be trusted after a crash, and would race with the next
//! opener writing it.)
//!
//! Elsewhere (no `/proc`), or when the holder is in a pid namespace this process cannot see
//! (the kernel then reports pid 0), the holder is unknown and the error says only that the
//! store is in use.

use std::path::Path;

pub use retrace_store::Holder;

/// Longest command line quoted in an error, in characters.
const MAX_COMMAND: usize = 300;

/// The process holding the `flock` on `file`, if the kernel says.
#[cfg(unix)]
pub fn of(file: &Path) -> Option<Holder> {
    let meta = std::fs::metadata(file).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid = holder_pid(&locks, file_id(&meta))?;
    Some(Holder {
        pid,
        command: command_line(pid),
    })
}

/// The process holding the `flock` on `file`: unknown without `/proc/locks`.
#[cfg(not(unix))]
pub fn of(_file: &Path) -> Option<Holder> {
    None
}

/// Device (major, minor) and inode of a file, as `/proc/locks` prints them.
#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> ((u64, u64), u64) {
    use std::os::unix::fs::MetadataExt;
    let dev = meta.dev();
    // Linux's dev_t encoding (glibc `gnu_dev_major`/`gnu_dev_minor`)
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff);
    ((major, minor), meta.ino())
}

/// The pid holding a lock on the file `(device, inode)` according to `locks` (the text of
/// `/proc/locks`). Lines look like `1: FLOCK  ADVISORY  WRITE 1234 fe:00:5308787 0 EOF`;
/// `->` lines are processes waiting for a lock, not holding it. Some filesystems (overlay)
/// report another device for the lock than `stat` does: an inode held by exactly one pid
/// is then taken as ours.
fn holder_pid(locks: &str, (dev, ino): ((u64, u64), u64)) -> Option<u32> {
    let mut same_dev = None;
    let mut same_ino = Vec::new();
    for line in locks.lines() {
        let mut fields = line.split_whitespace().skip(1);
        let Some(kind) = fields.next() else { continue };
        if kind == "->" {
            continue;
        }
        let mut fields = fields.skip(2); // ADVISORY, READ/WRITE
        let (Some(pid), Some(id)) = (fields.next(), fields.next()) else {
            continue;
        };
        // pid 0: a holder in a namespace we cannot see; -1: an open file description lock
        let Some(pid) = pid.parse::<u32>().ok().filter(|&p| p > 0) else {
            continue;
        };
        let mut parts = id.split(':');
        let (Some(major), Some(minor), Some(inode)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if inode.parse::<u64>().ok() != Some(ino) {
            continue;
        }
        let device = (
            u64::from_str_radix(major, 16).ok(),
            u64::from_str_radix(minor, 16).ok(),
        );
        if device == (Some(dev.0), Some(dev.1)) {
            same_dev = Some(pid);
        }
        same_ino.push(pid);
    }
    same_ino.sort_unstable();
    same_ino.dedup();
    same_dev.or(match same_ino[..] {
        [only] => Some(only),
        _ => None,
    })
}

/// `pid`'s command line, arguments separated by spaces, cut to [`MAX_COMMAND`] characters.
fn command_line(pid: u32) -> String {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return String::new();
    };
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let line = args.join(" ");
    if line.chars().count() > MAX_COMMAND {
        let cut: String = line.chars().take(MAX_COMMAND).collect();
        format!("{cut}…")
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCKS: &str = "\
1: FLOCK  ADVISORY  WRITE 1669 fe:00:5308787 0 EOF
2: FLOCK  ADVISORY  WRITE 5916 fe:00:10011165 0 EOF
2: -> FLOCK  ADVISORY  WRITE 6030 fe:00:10011165 0 EOF
3: POSIX  ADVISORY  READ 77 08:01:10011165 0 EOF
4: OFDLCK ADVISORY  WRITE -1 08:02:42 0 EOF
";

    #[test]
    fn the_holder_is_the_lock_on_the_file_s_device_and_inode() {
        assert_eq!(holder_pid(LOCKS, ((0xfe, 0), 10_011_165)), Some(5916));
        assert_eq!(holder_pid(LOCKS, ((8, 1), 10_011_165)), Some(77));
        assert_eq!(holder_pid(LOCKS, ((0xfe, 0), 5_308_787)), Some(1669));
        // another device, one pid on the inode: taken (overlay reports the lower device)
        assert_eq!(holder_pid(LOCKS, ((0, 50), 5_308_787)), Some(1669));
        // another device and two pids on the inode: unknown
        assert_eq!(holder_pid(LOCKS, ((0, 50), 10_011_165)), None);
        // an open file description lock has no pid
        assert_eq!(holder_pid(LOCKS, ((8, 2), 42)), None);
        assert_eq!(holder_pid(LOCKS, ((0xfe, 0), 1)), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_locked_file_names_the_process_holding_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db");
        let file = std::fs::File::create(&path).expect("create");
        assert_eq!(of(&path), None, "nobody holds it yet");
        file.try_lock().expect("flock");
        let holder = of(&path).expect("a holder");
        assert_eq!(holder.pid, std::process::id());
        let me = std::env::args().next().expect("argv[0]");
        assert!(holder.command.starts_with(&me), "{holder:?}");
        drop(file);
        assert_eq!(of(&path), None, "a closed file holds no lock");
    }
}
