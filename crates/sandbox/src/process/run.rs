//! The parent side: spawn the helper in a new process group, capture, time out, kill.

use std::os::unix::process::ExitStatusExt;
use std::pin::pin;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::capture::Capture;
use super::cgroup::{PidsCgroup, euid};
use super::{Error, Finished, Job, Mode, Wire};

/// How long output is still read after the command exited and its group was killed: enough
/// for the pipes to drain, bounded in case a process outside the group holds them open.
const DRAIN: Duration = Duration::from_millis(500);

/// Runs `job.argv` through the helper and waits for it, reading its output. Returns when the
/// command has exited (or was killed at the timeout) and every process left in its group has
/// been SIGKILLed. The command's own failure is a [`Finished`] (exit code 125 when the helper
/// could not confine it); `Err` only when it could not be started or waited for. Dropping the
/// future SIGKILLs the whole group.
pub async fn run(job: &Job) -> Result<Finished, Error> {
    if job.argv.is_empty() {
        return Err(Error::Invalid("the command (argv) is empty".into()));
    }
    let c = &job.confinement;
    let cgroup = match PidsCgroup::create(c.max_processes) {
        Ok(cgroup) => Some(cgroup),
        Err(e) if c.mode == Mode::Kernel && euid()? == 0 => {
            return Err(Error::Limit(format!(
                "running as root, where RLIMIT_NPROC does not bind, and no pids cgroup: {e}"
            )));
        }
        Err(e) => {
            tracing::debug!(error = %e, "no pids cgroup; RLIMIT_NPROC only");
            None
        }
    };
    let wire = Wire {
        confinement: c.clone(),
        pids_cgroup: cgroup.as_ref().map(|cg| cg.path().to_owned()),
    };
    let wire = serde_json::to_string(&wire).expect("a confinement always serialises");

    let mut command = tokio::process::Command::new(&job.launcher.program);
    command
        .args(&job.launcher.args)
        .arg(wire)
        .arg("--")
        .args(&job.argv)
        .env_clear()
        .envs(job.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&job.cwd)
        .process_group(0)
        .stdin(if job.stdin.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let start = Instant::now();
    let mut child = command.spawn().map_err(|source| Error::Spawn {
        program: job.launcher.program.clone(),
        source,
    })?;
    let pid = child.id().expect("a child just spawned has a pid");
    let mut group = Group {
        pgid: Pid::from_raw(i32::try_from(pid).expect("pids fit in i32")),
        cgroup,
        killed: false,
    };
    feed(child.stdin.take(), &job.stdin);
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut out = Capture::new(job.shown_bytes, job.keep_bytes);
    let mut err = Capture::new(job.shown_bytes, job.keep_bytes);

    let mut timed_out = false;
    let (status, duration) = {
        let mut reading =
            pin!(async { tokio::join!(drain(stdout, &mut out), drain(stderr, &mut err)) });
        let mut reading_done = false;
        let mut wait = pin!(child.wait());
        let mut deadline = pin!(tokio::time::sleep(job.timeout));
        let mut kill_at = pin!(tokio::time::sleep(Duration::MAX));
        let mut sigkilled = false;
        let status = loop {
            tokio::select! {
                _ = &mut reading, if !reading_done => reading_done = true,
                status = &mut wait => break status?,
                () = &mut deadline, if !timed_out => {
                    timed_out = true;
                    group.signal(Signal::SIGTERM);
                    kill_at.as_mut().reset(tokio::time::Instant::now() + job.grace);
                }
                () = &mut kill_at, if timed_out && !sigkilled => {
                    sigkilled = true;
                    group.signal(Signal::SIGKILL);
                }
            }
        };
        let duration = start.elapsed();
        // Nothing the command started outlives it, nor keeps its pipes open.
        group.kill();
        if !reading_done {
            let _ = tokio::time::timeout(DRAIN, &mut reading).await;
        }
        (status, duration)
    };
    drop(group);
    Ok(Finished {
        exit_code: status.code(),
        signal: status.signal(),
        timed_out,
        duration,
        stdout: out.finish(),
        stderr: err.finish(),
    })
}

/// Reads `stream` to its end (or its first error) into `capture`.
async fn drain(mut stream: impl AsyncRead + Unpin, capture: &mut Capture) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => capture.push(&buf[..n]),
        }
    }
}

/// The command's process group (and cgroup): SIGKILLed when dropped, so a cancelled call
/// leaves nothing running.
#[derive(Debug)]
struct Group {
    pgid: Pid,
    cgroup: Option<PidsCgroup>,
    killed: bool,
}

impl Group {
    fn signal(&self, signal: Signal) {
        let _ = killpg(self.pgid, signal);
        if signal == Signal::SIGKILL
            && let Some(cgroup) = &self.cgroup
        {
            cgroup.kill_all();
        }
    }

    fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        self.killed = true;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.killed {
            self.signal(Signal::SIGKILL);
        }
        // The cgroup, dropped next, sweeps once more and removes itself.
    }
}

/// Write `input` to the command's standard input (when piped) and close it, beside the run:
/// a command that does not read it all, or exits first, just closes the pipe.
fn feed(pipe: Option<tokio::process::ChildStdin>, input: &[u8]) {
    if let Some(mut pipe) = pipe {
        let input = input.to_vec();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = pipe.write_all(&input).await;
        });
    }
}
