//! # Native commands in a Linux process sandbox (`exec.run`)
//!
//! The workspace forbids `unsafe`, so there is no `pre_exec` hook: confinement is done by
//! **re-exec**. [`run`] spawns a *helper program* ([`Launcher`]: in the product the `retrace`
//! binary itself with first argument [`HELPER_ARG`]) in a fresh process group; the helper
//! ([`helper_main`]) confines *itself* while it is still single-threaded, then `exec`s the
//! command, which inherits every restriction. The layers, in the order the helper applies
//! them, and exactly what each one does and does not guarantee:
//!
//! 1. **Parent death** — `PR_SET_PDEATHSIG(SIGKILL)`: the helper (and so the command, the same
//!    process after `exec`) is killed when the thread of retrace that spawned it dies, including
//!    by SIGKILL. *Not* inherited by the command's own children (grandchildren survive a
//!    SIGKILLed retrace until something else kills their group); it fires when the spawning
//!    *thread* exits, so [`run`] must be polled on a long-lived thread (tokio workers are).
//! 2. **Process bound** — a fresh *pids cgroup* (v1, `/sys/fs/cgroup/pids/retrace-sandbox/…`,
//!    made by [`run`], joined by the helper, removed after the call) with `pids.max =
//!    max_processes`: an exact bound on the tasks (processes and threads) of the call, which
//!    holds for root too; and `RLIMIT_NPROC` = this real uid's current task count +
//!    `max_processes`. Measured on this kernel: `RLIMIT_NPROC` is **never** enforced for uid 0
//!    (the kernel exempts the initial root user even with every capability dropped), and for
//!    other uids it counts *all* tasks of that uid, so a busy uid gets less headroom than it
//!    asked for. Hence in [`Mode::Kernel`] running as root without a usable pids cgroup,
//!    [`run`] refuses ([`Error::Limit`]) and [`probe`] says so. Cgroup v2 is not supported.
//! 3. **Resource limits** — `RLIMIT_CPU` (seconds of CPU; SIGXCPU, then SIGKILL one second
//!    later), `RLIMIT_AS` (bytes of address space: allocations fail, it is not an RSS bound),
//!    `RLIMIT_FSIZE` (bytes per file written; SIGXFSZ), `RLIMIT_CORE = 0`. Per process: a
//!    command that forks gets a fresh budget per child (the process bound caps how many).
//! 4. **Capabilities** ([`Mode::Kernel`]) — effective, permitted, inheritable, ambient and the
//!    bounding set are all cleared, so even as uid 0 the command has no capability and cannot
//!    regain one by `exec` (together with `no_new_privs`, which landlock sets). A root command
//!    still *owns* root's files: ordinary permission bits still let it read/write those the
//!    allow-list below reaches.
//! 5. **Landlock** ([`Mode::Kernel`], ABI ≥ 4 required, enforcement checked, never silently
//!    skipped) — filesystem allow-list: read + execute on `/usr /bin /sbin /lib /lib32 /lib64
//!    /opt` (those that exist), on each entry of `/etc` except secrets ([`ETC_DENIED`]:
//!    `shadow`, `sudoers`, `ssh`, `ssl/private`, …; landlock cannot carve a hole in an allowed
//!    directory, so every other child is its own rule; `/etc` itself cannot be listed), on `/dev/urandom /dev/random`, and on
//!    [`Confinement::read`]; read + write on `/dev/null /dev/zero /dev/full` (not `/dev/tty`:
//!    no writing to the user's terminal); every
//!    right (read, write, execute, create, remove, rename, truncate) on the workspace, the tmp
//!    dir and [`Confinement::write`]. Nothing else: not the user's home, not `/proc` (it would
//!    leak other processes' environments; so `/dev/stdin`, `/dev/fd/N` and bash's `<(…)` do not
//!    work), not `/sys`, not `/tmp` (set `TMPDIR` to [`Confinement::tmp`] in the job's env).
//!    Rules follow symlinks at the moment they are made and checks apply to the resolved
//!    path, so a symlink in the workspace pointing out does not help. With `network = false`
//!    TCP `connect` and `bind` are denied on every port. Scopes (ABI 6, best effort): no
//!    signals to processes outside the sandbox, no abstract unix sockets outside it.
//!    Landlock does *not* revoke files already open when it starts, so the helper first
//!    closes every descriptor but stdin/stdout/stderr (retrace may have inherited some without
//!    close-on-exec), and says nothing about UDP or other socket families. The confinement's
//!    own paths must still be where they were resolved: one re-pointed by a symlink since (by
//!    an earlier command, when a `read` path lies inside a `write` one) fails the call.
//! 6. **Seccomp** ([`Mode::Kernel`]; a BPF filter for the running arch, other arches are
//!    killed) — always `EPERM`: `ptrace`, `process_vm_readv/writev`, `mount`, `umount2`, the new
//!    mount API, `unshare`, `setns`, `pivot_root`, `chroot`, `bpf`, `perf_event_open`,
//!    `keyctl`, `add_key`, `request_key`, module loading, `kexec_*`, `io_uring_*` (its
//!    operations would bypass the socket filter), `setsid` and `setpgid` (they would take a
//!    process out of the group [`run`] kills), `ioctl(TIOCSTI/TIOCLINUX)`, `socket()` of
//!    `AF_UNIX` (landlock does not govern `connect()` to a socket path, so a unix socket
//!    would reach any local daemon of the same user — `retrace serve`'s own socket, which
//!    runs specs unconfined), and `socketpair` of any type but `SOCK_STREAM` (a datagram pair
//!    could `sendto` any datagram socket by its path). With `network = false`: `socket()` of any
//!    family but `AF_NETLINK` (`AF_INET`, `AF_INET6`, `AF_PACKET`, …) → `EPERM`, which is what
//!    blocks UDP and raw sockets. `AF_NETLINK` stays (glibc's resolver and `ip addr` use it;
//!    without capabilities it cannot change anything).
//!    On x86_64 the same numbers with the x32 bit are denied too, and the x32-only numbers
//!    (512–547) outright.
//!
//! [`Mode::None`] applies only layers 1–3 (plus the environment and process group): the
//! command runs with the caller's full filesystem, network and capabilities.
//!
//! The parent side ([`run`]): the environment is exactly [`Job::env`]; stdin is `/dev/null`;
//! stdout and stderr are read concurrently, never buffering more than about
//! [`Job::keep_bytes`] + [`Job::shown_bytes`] per stream; at the timeout the group gets SIGTERM,
//! after the grace SIGKILL; when the command exits, whatever it left in its group (or its
//! cgroup) is SIGKILLed, so no `sleep 100 &` outlives the call or holds it open; dropping the
//! future SIGKILLs the group too.

mod capture;
mod cgroup;
#[cfg(target_os = "linux")]
mod confine;
mod run;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use run::run;

/// The first argument that makes the `retrace` binary act as the sandbox helper.
pub const HELPER_ARG: &str = "__sandbox-exec";

/// The system trees every confined command may read and execute (those that exist), besides
/// `/etc` less [`ETC_DENIED`]: nothing secret may live under them (a store, say).
pub const SYSTEM_READ: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/opt"];

/// Entries of `/etc` (relative paths) the command may never read, in [`Mode::Kernel`].
pub const ETC_DENIED: &[&str] = &[
    "shadow",
    "shadow-",
    "gshadow",
    "gshadow-",
    "sudoers",
    "sudoers.d",
    "ssh",
    "ssl/private",
    "security/opasswd",
    "credstore",
    "credstore.encrypted",
    "wireguard",
    "NetworkManager/system-connections",
    ".pwd.lock",
];

/// How much the kernel confines the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Landlock (files, TCP) + seccomp (sockets, dangerous calls) + every capability dropped,
    /// on top of what [`Mode::None`] does.
    Kernel,
    /// Only parent death, the process bound, resource limits, the environment and the process
    /// group: no filesystem or network confinement.
    None,
}

/// What the helper confines the command to. Paths should be absolute; the helper fails
/// (exit 125) when a path of the workspace, `tmp`, `read` or `write` does not exist.
/// A limit of `0` means "no limit" for `cpu_secs`, `memory_bytes`, `max_processes` and
/// `file_bytes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Confinement {
    /// Kernel confinement or none.
    pub mode: Mode,
    /// Read + write + execute (create, remove, rename, truncate).
    pub workspace: PathBuf,
    /// Read + write, like the workspace: a fresh directory per call that the caller makes and
    /// removes.
    pub tmp: PathBuf,
    /// Extra read(+execute)-only paths (directories or files).
    pub read: Vec<PathBuf>,
    /// Extra read-write paths (directories or files).
    pub write: Vec<PathBuf>,
    /// `false`: no TCP connect/bind (landlock) and no socket but `AF_NETLINK`
    /// (seccomp). `true`: IP networking is not confined (unix sockets still are).
    pub network: bool,
    /// `RLIMIT_CPU`, seconds of CPU time per process.
    pub cpu_secs: u64,
    /// `RLIMIT_AS`, bytes of address space per process.
    pub memory_bytes: u64,
    /// At most this many tasks (processes + threads) at once for the whole call, the command
    /// included (pids cgroup; `RLIMIT_NPROC` on top).
    pub max_processes: u64,
    /// `RLIMIT_FSIZE`, bytes: the largest file the command may write.
    pub file_bytes: u64,
}

/// How to start the helper: `program args… <confinement JSON> -- <argv…>`.
#[derive(Clone, Debug)]
pub struct Launcher {
    /// The helper program, e.g. `std::env::current_exe()`.
    pub program: PathBuf,
    /// Its first arguments, e.g. `["__sandbox-exec"]` ([`HELPER_ARG`]).
    pub args: Vec<OsString>,
}

/// One command to run.
#[derive(Clone, Debug)]
pub struct Job {
    /// The helper.
    pub launcher: Launcher,
    /// What the command is confined to.
    pub confinement: Confinement,
    /// The command: `argv[0]` is looked up in `PATH` from [`Job::env`] (e.g. `["/bin/sh",
    /// "-c", command]`). Must not be empty.
    pub argv: Vec<String>,
    /// Working directory of the command.
    pub cwd: PathBuf,
    /// The whole environment of the command (nothing is inherited).
    pub env: Vec<(String, String)>,
    /// Written to the command's standard input, which is then closed (empty: `/dev/null`).
    pub stdin: Vec<u8>,
    /// Wall time until SIGTERM to the whole process group.
    pub timeout: Duration,
    /// Time between that SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Per stream, the bytes of [`Captured::shown`]: head and tail, this many in all, with a
    /// marker between them.
    pub shown_bytes: usize,
    /// Per stream, the bytes of [`Captured::whole`] kept at most (first half and last half
    /// beyond that).
    pub keep_bytes: usize,
}

/// How the command ended and what it wrote.
#[derive(Clone, Debug)]
pub struct Finished {
    /// Exit code when it exited (125: the helper could not confine; 126: cannot execute;
    /// 127: not found).
    pub exit_code: Option<i32>,
    /// The signal number when it was killed by one.
    pub signal: Option<i32>,
    /// The timeout expired (the group got SIGTERM, then SIGKILL after the grace).
    pub timed_out: bool,
    /// Wall time from spawn to exit.
    pub duration: Duration,
    /// Standard output.
    pub stdout: Captured,
    /// Standard error.
    pub stderr: Captured,
}

/// One output stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// What the model sees: at most [`Job::shown_bytes`] bytes of head and tail (cut on UTF-8
    /// boundaries, invalid bytes replaced) with `\n[… N bytes omitted …]\n` between when the
    /// stream was longer.
    pub shown: String,
    /// Every byte the stream carried.
    pub total_bytes: u64,
    /// The raw stream when `total_bytes <= keep_bytes`; else its first `keep_bytes / 2` and
    /// last `keep_bytes - keep_bytes / 2` bytes, concatenated.
    pub whole: Vec<u8>,
    /// `whole` is not the whole stream.
    pub whole_truncated: bool,
}

/// Why [`run`] could not run the command at all (its own failure is a [`Finished`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The helper program could not be started.
    #[error("cannot start the sandbox helper {program}: {source}", program = program.display())]
    Spawn {
        /// The helper program.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The process bound cannot be enforced here.
    #[error("cannot bound the number of processes: {0}")]
    Limit(String),
    /// The job is not valid (e.g. an empty `argv`).
    #[error("invalid job: {0}")]
    Invalid(String),
    /// Reading the command's output or waiting for it failed.
    #[error("sandbox I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Whether this kernel can confine in [`Mode::Kernel`]: landlock with TCP rules (ABI ≥ 4),
/// seccomp filters for this arch, and (as root) a pids cgroup to bound processes. `Err` says
/// what is missing, in words for an error message.
pub fn probe() -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        confine::probe_kernel()?;
        cgroup::probe_bound()
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err("the process sandbox needs Linux (landlock and seccomp)".to_owned())
    }
}

/// The helper's entry point. `args` are its arguments after [`HELPER_ARG`]: `<confinement
/// JSON> -- <program> <args…>`. Confines this process (which must still be single-threaded)
/// and `exec`s the program; never returns. Any failure prints `retrace sandbox: <what
/// failed>` to stderr and exits 125; an `exec` failure exits 127 (not found) or 126.
pub fn helper_main(args: Vec<OsString>) -> ! {
    #[cfg(target_os = "linux")]
    {
        confine::main(args)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = args;
        eprintln!("retrace sandbox: the process sandbox needs Linux");
        std::process::exit(125)
    }
}

/// What the parent passes the helper: the confinement plus the cgroup it made.
#[derive(Serialize, Deserialize)]
struct Wire {
    #[serde(flatten)]
    confinement: Confinement,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pids_cgroup: Option<PathBuf>,
}
