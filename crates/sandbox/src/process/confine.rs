//! The helper side: confine this (single-threaded) process, then `exec` the command.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope,
};
use nix::libc;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::Signal;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::{Confinement, ETC_DENIED, Mode, SYSTEM_READ, Wire};

/// The landlock ABI whose rights are required (TCP rules came with 4).
const ABI_REQUIRED: ABI = ABI::V4;

/// Devices readable only.
const DEV_READ: &[&str] = &["/dev/urandom", "/dev/random"];
/// Devices readable and writable.
/// (Not `/dev/tty`: the command would write to the user's terminal, unrecorded.)
const DEV_WRITE: &[&str] = &["/dev/null", "/dev/zero", "/dev/full"];

pub(super) fn main(arguments: Vec<OsString>) -> ! {
    let (wire, argv) = match parse(arguments) {
        Ok(parsed) => parsed,
        Err(e) => fail(&e),
    };
    close_inherited();
    if let Err(e) = confine(&wire) {
        fail(&e);
    }
    let error = Command::new(&argv[0]).args(&argv[1..]).exec();
    eprintln!(
        "retrace sandbox: cannot execute {}: {error}",
        argv[0].to_string_lossy()
    );
    std::process::exit(if error.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

/// Close every descriptor but stdin, stdout and stderr: whatever started retrace may have
/// left some open without close-on-exec (a jobserver pipe, a socket), and landlock does not
/// take back files already open.
fn close_inherited() {
    let Ok(entries) = fs::read_dir("/proc/self/fd") else {
        return;
    };
    let open: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in open {
        // the directory's own descriptor is closed already: EBADF, ignored
        let _ = nix::unistd::close(fd);
    }
}

fn fail(what: &str) -> ! {
    eprintln!("retrace sandbox: {what}");
    std::process::exit(125)
}

fn parse(arguments: Vec<OsString>) -> Result<(Wire, Vec<OsString>), String> {
    let mut rest = arguments.into_iter();
    let json = rest
        .next()
        .ok_or("missing arguments: <confinement JSON> -- <program> <args…>")?;
    let json = json.to_str().ok_or("the confinement is not UTF-8")?;
    let wire: Wire =
        serde_json::from_str(json).map_err(|e| format!("invalid confinement JSON: {e}"))?;
    if rest.next().is_none_or(|sep| sep != "--") {
        return Err("expected `--` after the confinement".into());
    }
    let argv: Vec<OsString> = rest.collect();
    if argv.is_empty() {
        return Err("no program after `--`".into());
    }
    Ok((wire, argv))
}

fn confine(wire: &Wire) -> Result<(), String> {
    let c = &wire.confinement;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("cannot set the parent-death signal: {e}"))?;
    if std::os::unix::process::parent_id() == 1 {
        return Err("retrace exited before the command started".into());
    }
    if let Some(cgroup) = &wire.pids_cgroup {
        fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
            .map_err(|e| format!("cannot join the pids cgroup {}: {e}", cgroup.display()))?;
    } else if c.mode == Mode::Kernel && super::cgroup::euid().unwrap_or(0) == 0 {
        return Err("running as root without a pids cgroup: processes cannot be bounded".into());
    }
    limits(c)?;
    if c.mode == Mode::None {
        return Ok(());
    }
    // Open every allowed path while this process can still reach it, then drop privileges.
    let ruleset = landlock_ruleset(c)?;
    drop_capabilities()?;
    let status = ruleset
        .restrict_self()
        .map_err(|e| format!("landlock: {e}"))?;
    if status.ruleset == RulesetStatus::NotEnforced || !status.no_new_privs {
        return Err(format!("landlock is not enforced ({status:?})"));
    }
    let filter = seccomp_filter(c.network)?;
    seccompiler::apply_filter(&filter).map_err(|e| format!("seccomp: {e}"))
}

// ---- resource limits ----------------------------------------------------------------------

fn limits(c: &Confinement) -> Result<(), String> {
    let nproc = if c.max_processes == 0 {
        0
    } else {
        uid_tasks(real_uid()?) + c.max_processes
    };
    for (resource, name, value) in [
        (Resource::RLIMIT_CPU, "RLIMIT_CPU", c.cpu_secs),
        (Resource::RLIMIT_AS, "RLIMIT_AS", c.memory_bytes),
        (Resource::RLIMIT_FSIZE, "RLIMIT_FSIZE", c.file_bytes),
        (Resource::RLIMIT_NPROC, "RLIMIT_NPROC", nproc),
    ] {
        if value == 0 {
            continue;
        }
        let (_, hard) = getrlimit(resource).map_err(|e| format!("getrlimit {name}: {e}"))?;
        let soft = value.min(hard);
        // CPU: SIGXCPU at the soft limit, SIGKILL a second later.
        let hard_new = if resource == Resource::RLIMIT_CPU {
            value.saturating_add(1).min(hard)
        } else {
            soft
        };
        setrlimit(resource, soft, hard_new)
            .map_err(|e| format!("setrlimit {name} = {value}: {e}"))?;
    }
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(|e| format!("setrlimit RLIMIT_CORE: {e}"))?;
    Ok(())
}

/// The real uid of this process (`Uid:` in `/proc/self/status`).
fn real_uid() -> Result<u32, String> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    status_field(&status, "Uid:").ok_or_else(|| "no Uid in /proc/self/status".into())
}

fn status_field(status: &str, key: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Tasks (threads) whose real uid is `uid`: what `RLIMIT_NPROC` counts.
fn uid_tasks(uid: u32) -> u64 {
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter_map(|e| fs::read_to_string(e.path().join("status")).ok())
        .filter(|s| status_field(s, "Uid:") == Some(uid))
        .map(|s| u64::from(status_field(&s, "Threads:").unwrap_or(1)))
        .sum()
}

// ---- capabilities -------------------------------------------------------------------------

fn drop_capabilities() -> Result<(), String> {
    use caps::CapSet;
    // The bounding set first: dropping from it needs CAP_SETPCAP, still held.
    for set in [
        CapSet::Bounding,
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set)
            .map_err(|e| format!("cannot clear the {set:?} capabilities: {e}"))?;
    }
    Ok(())
}

// ---- landlock -----------------------------------------------------------------------------

fn landlock_ruleset(c: &Confinement) -> Result<RulesetCreated, String> {
    let abi = ABI_REQUIRED;
    let read = AccessFs::from_read(abi);
    let all = AccessFs::from_all(abi);
    let mut rules: Vec<(PathBuf, BitFlags<AccessFs>, bool)> = Vec::new();
    for p in SYSTEM_READ {
        rules.push((p.into(), read, false));
    }
    etc_rules(Path::new("/etc"), ETC_DENIED, &mut |p| {
        rules.push((p, read, false));
    })?;
    for p in DEV_READ {
        rules.push((p.into(), AccessFs::ReadFile.into(), false));
    }
    for p in DEV_WRITE {
        rules.push((
            p.into(),
            AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate,
            false,
        ));
    }
    for p in &c.read {
        rules.push((p.clone(), read, true));
    }
    for p in [&c.workspace, &c.tmp].into_iter().chain(&c.write) {
        rules.push((p.clone(), all, true));
    }

    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(all)
        .map_err(|e| format!("landlock: {e}"))?;
    if !c.network {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(abi))
            .map_err(|e| format!("landlock: {e}"))?;
    }
    // Scopes came with ABI 6: used where the kernel has them.
    let mut created = ruleset
        .set_compatibility(CompatLevel::BestEffort)
        .scope(Scope::AbstractUnixSocket | Scope::Signal)
        .map_err(|e| format!("landlock: {e}"))?
        .set_compatibility(CompatLevel::HardRequirement)
        .create()
        .map_err(|e| format!("landlock: {e}"))?;
    for (path, access, required) in rules {
        let Ok(meta) = fs::metadata(&path) else {
            if required {
                return Err(format!("allowed path {} does not exist", path.display()));
            }
            continue;
        };
        let fd = match PathFd::new(&path) {
            Ok(fd) => fd,
            Err(e) if required => return Err(format!("cannot open {}: {e}", path.display())),
            Err(_) => continue,
        };
        // The confinement's own paths (workspace, tmp, read, write) are given resolved; one
        // that now leads elsewhere was swapped for a symlink since, maybe by an earlier
        // command (a `read` path inside a `write` one, re-pointed at the store): refused.
        // What the opened descriptor really is, not the name, is compared.
        if required {
            let opened = fs::read_link(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
                .map_err(|e| format!("cannot tell where {} leads: {e}", path.display()))?;
            if opened != path {
                return Err(format!(
                    "allowed path {} now leads to {} (a symlink on the way); sandbox paths \
                     must not move",
                    path.display(),
                    opened.display()
                ));
            }
        }
        let access = if meta.is_dir() {
            access
        } else {
            access & AccessFs::from_file(abi)
        };
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| format!("landlock rule for {}: {e}", path.display()))?;
    }
    Ok(created)
}

/// Calls `allow` with each entry of `dir` except those `denied` (paths relative to `dir`);
/// a directory holding a denied path is descended into instead of allowed whole.
fn etc_rules(dir: &Path, denied: &[&str], allow: &mut dyn FnMut(PathBuf)) -> Result<(), String> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue; // not UTF-8: cannot be matched against the deny list, so not allowed
        };
        if denied.contains(&name) {
            continue;
        }
        let prefix = format!("{name}/");
        let below: Vec<&str> = denied
            .iter()
            .filter_map(|d| d.strip_prefix(&prefix))
            .collect();
        if below.is_empty() {
            allow(entry.path());
        } else if entry.file_type().is_ok_and(|t| t.is_dir()) {
            etc_rules(&entry.path(), &below, allow)?;
        }
    }
    Ok(())
}

// ---- seccomp ------------------------------------------------------------------------------

/// Syscalls always refused with `EPERM`.
const DENIED_SYSCALLS: &[i64] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_setsid,
    libc::SYS_setpgid,
];

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, String> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| format!("seccomp condition: {e}"))
}

fn seccomp_filter(network: bool) -> Result<BpfProgram, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED_SYSCALLS.iter().map(|nr| (*nr, Vec::new())).collect();
    let tty_inject = [libc::TIOCSTI, libc::TIOCLINUX]
        .into_iter()
        .map(|req| {
            SeccompRule::new(vec![
                #[allow(clippy::useless_conversion)] // c_ulong is u32 on 32-bit targets
                cond(1, SeccompCmpOp::Eq, u64::from(req))?,
            ])
            .map_err(|e| format!("seccomp rule: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    rules.insert(libc::SYS_ioctl, tty_inject);
    // Never a unix socket of its own: landlock does not govern `connect()` to a socket's
    // path, so one would reach any local daemon running as the same user — `retrace
    // serve`'s own socket among them, which would run a spec without the sandbox.
    // (A stream `socketpair` stays: connected, it reaches nothing outside.)
    let refused_family = if network {
        SeccompRule::new(vec![cond(0, SeccompCmpOp::Eq, libc::AF_UNIX as u64)?])
    } else {
        // any family but netlink: AF_UNIX, AF_INET, AF_INET6, AF_PACKET, …
        SeccompRule::new(vec![cond(0, SeccompCmpOp::Ne, libc::AF_NETLINK as u64)?])
    }
    .map_err(|e| format!("seccomp rule: {e}"))?;
    rules.insert(libc::SYS_socket, vec![refused_family]);
    // A datagram pair could still `sendto` any datagram socket by its path (`/dev/log`, the
    // journal): only connected stream pairs.
    // (the type's low bits; the rest are flags such as SOCK_CLOEXEC)
    let not_stream = [
        libc::SOCK_DGRAM,
        libc::SOCK_RAW,
        libc::SOCK_RDM,
        libc::SOCK_SEQPACKET,
        libc::SOCK_DCCP,
        10, // SOCK_PACKET (obsolete)
    ]
    .into_iter()
    .map(|kind| {
        let kind = u64::try_from(kind).expect("socket types are small and positive");
        SeccompRule::new(vec![cond(1, SeccompCmpOp::MaskedEq(0xf), kind)?])
            .map_err(|e| format!("seccomp rule: {e}"))
    })
    .collect::<Result<Vec<_>, String>>()?;
    rules.insert(libc::SYS_socketpair, not_stream);
    if cfg!(target_arch = "x86_64") {
        // The x32 ABI reaches the same calls with bit 30 set in the number, and some by
        // numbers of its own (512–547: `ioctl`, `ptrace`, `process_vm_*`, `sendmsg`…): all
        // of those are refused outright, no x32 program being expected here.
        let x32: Vec<_> = rules
            .iter()
            .map(|(nr, r)| (nr | 0x4000_0000, r.clone()))
            .collect();
        rules.extend(x32);
        rules.extend((512..=547).map(|nr| (0x4000_0000 | nr, Vec::new())));
    }
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("seccomp: unsupported arch: {e}"))?;
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .and_then(BpfProgram::try_from)
    .map_err(|e| format!("seccomp filter: {e}"))
}

// ---- probe --------------------------------------------------------------------------------

pub(super) fn probe_kernel() -> Result<(), String> {
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI_REQUIRED))
        .and_then(|r| r.handle_access(AccessNet::from_all(ABI_REQUIRED)))
        .and_then(Ruleset::create)
        .map_err(|e| format!("landlock with TCP rules (ABI 4, Linux 6.7) is not available: {e}"))?;
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    if !status.lines().any(|l| l.starts_with("Seccomp:")) {
        return Err("the kernel has no seccomp".into());
    }
    seccomp_filter(false).map(drop)
}
