//! The per-call pids cgroup (v1): the exact bound on tasks, root included, and the list of
//! every task of the call to kill at the end.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Where the calls' cgroups live: one directory per call, named `<retrace pid>-<n>`.
const BASE: &str = "/sys/fs/cgroup/pids/retrace-sandbox";

/// A pids cgroup made for one call; dropping it kills what is left in it and removes it.
#[derive(Debug)]
pub(super) struct PidsCgroup {
    dir: PathBuf,
}

impl PidsCgroup {
    /// Makes a cgroup with `pids.max = max` (`0`: no bound).
    pub(super) fn create(max: u64) -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        fs::create_dir_all(BASE)?;
        remove_stale();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = Path::new(BASE).join(format!("{}-{n}", std::process::id()));
        fs::create_dir(&dir)?;
        let cgroup = PidsCgroup { dir };
        let max = if max == 0 {
            "max".to_owned()
        } else {
            max.to_string()
        };
        fs::write(cgroup.dir.join("pids.max"), max)?;
        Ok(cgroup)
    }

    pub(super) fn path(&self) -> &Path {
        &self.dir
    }

    /// SIGKILLs every process in the cgroup.
    pub(super) fn kill_all(&self) {
        kill_all(&self.dir);
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        if try_remove(&self.dir) {
            return;
        }
        // Killed processes leave the cgroup when the kernel has finished them, a moment later:
        // retry off the async thread.
        let dir = self.dir.clone();
        let retry = move || {
            for _ in 0..250 {
                std::thread::sleep(Duration::from_millis(20));
                if try_remove(&dir) {
                    return;
                }
            }
            tracing::warn!(cgroup = %dir.display(), "sandbox cgroup still busy; left in place");
        };
        if std::thread::Builder::new()
            .name("sandbox-cgroup".into())
            .spawn(retry)
            .is_err()
        {
            tracing::warn!(cgroup = %self.dir.display(), "cannot remove the sandbox cgroup");
        }
    }
}

fn kill_all(dir: &Path) {
    let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) else {
        return;
    };
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

fn try_remove(dir: &Path) -> bool {
    kill_all(dir);
    match fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

/// Removes the cgroups of retrace processes that no longer exist (after a crash).
fn remove_stale() {
    let Ok(entries) = fs::read_dir(BASE) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name.to_str().and_then(|n| n.split('-').next()) else {
            continue;
        };
        if owner.parse::<u32>().is_ok() && !Path::new("/proc").join(owner).exists() {
            let _ = try_remove(&entry.path());
        }
    }
}

/// The effective uid of this process.
pub(super) fn euid() -> io::Result<u32> {
    Ok(fs::metadata("/proc/self")?.uid())
}

/// Whether [`super::Mode::Kernel`] can bound processes here: any uid but root has
/// `RLIMIT_NPROC`; root needs the pids cgroup.
pub(super) fn probe_bound() -> Result<(), String> {
    if euid().map_err(|e| format!("cannot read /proc/self: {e}"))? != 0 {
        return Ok(());
    }
    PidsCgroup::create(1).map(drop).map_err(|e| {
        format!(
            "running as root, where RLIMIT_NPROC does not bind, and no pids cgroup can be made \
             under {BASE} ({e}), so a fork bomb could not be bounded"
        )
    })
}
