//! Linux isolation for execution environments.
//!
//! A sandbox is set up by a *helper*: the `lamina` binary re-executed (`lamina sandbox-helper`),
//! single-threaded from its first instruction, as Firecracker's jailer is. The multi-threaded
//! server only spawns it through `std::process::Command` (fork + exec, with nothing but `dup2`
//! in between) and reads back one message. The helper:
//!
//! 1. joins the instance's cgroups, so everything it starts is limited and accounted;
//! 2. unshares mount, PID, IPC, UTS and network namespaces and forks: the child is PID 1 of the
//!    new PID namespace (an init that reaps orphans), and dies with the helper, which dies with
//!    the server (`PR_SET_PDEATHSIG`; helpers are forked from one thread that lives as long as
//!    the server, since the signal follows the forking *thread*), so no sandbox process outlives
//!    the server;
//! 3. assembles a root filesystem on a tmpfs from read-only bind mounts of the host's system
//!    directories plus `/var/task`, `/opt` and a writable `/tmp`, mounts `/proc` and a minimal
//!    `/dev`, and `pivot_root`s into it;
//! 4. brings up loopback in the sandbox's own network namespace and creates the Runtime API's
//!    listening socket *there*, handing it to the server over the control socket: the function
//!    can reach the server's Runtime API and nothing else — not the host's loopback services;
//! 5. forks the workload, which drops every capability, becomes an unprivileged user, sets
//!    `no_new_privs`, rlimits and a seccomp filter, and execs the runtime.
//!
//! Architecture invariant: the only crate with `unsafe`; it knows nothing of Lambda.

pub mod cgroup;
mod helper;
mod seccomp;
pub mod tmpfs;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde::{Deserialize, Serialize};

pub use cgroup::{Cgroup, CgroupRoot, Limits};
pub use helper::helper_main;

/// The file descriptor the control socket has in the helper.
pub const CONTROL_FD: i32 = 3;

/// Everything the helper needs to build one sandbox and start its workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// A directory on the host, empty, where the root is assembled (a tmpfs is mounted on it
    /// inside the sandbox's mount namespace only).
    pub root: PathBuf,
    /// Host directories (or symlinks) exposed read-only at the same path: `/usr`, `/lib`, ...
    pub system_paths: Vec<PathBuf>,
    /// Host files exposed read-only under `/etc`.
    pub etc_files: Vec<PathBuf>,
    /// Mounted read-only at `/var/task`.
    pub code: PathBuf,
    /// Mounted read-only at `/opt`, when given.
    pub opt: Option<PathBuf>,
    /// Mounted read-only at `/var/runtime` (the platform's runtime bootstraps), when given.
    pub runtime: Option<PathBuf>,
    /// Mounted read-write at `/tmp`: an ext4 image made by [`tmpfs::prepare_image`] (on disk,
    /// of a fixed size), or else a host directory (on disk, without a size limit).
    pub tmp: PathBuf,
    pub hostname: String,
    pub uid: u32,
    pub gid: u32,
    /// The Runtime API listens on `127.0.0.1:<port>` inside the sandbox.
    pub runtime_api_port: u16,
    /// Cgroup directories (one per controller) the helper joins before anything else.
    pub cgroup_procs: Vec<PathBuf>,
    pub max_open_files: u64,
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("starting the sandbox helper failed: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the sandbox helper failed: {0}")]
    Helper(String),
    #[error("the sandbox control channel failed: {0}")]
    Control(String),
}

/// A running sandbox, from the server's side.
#[derive(Debug)]
pub struct Sandbox {
    /// The helper process; when it exits the whole sandbox is gone.
    pub helper: Child,
    /// The Runtime API socket, listening inside the sandbox's network namespace.
    pub runtime_api: TcpListener,
}

/// What the helper reports once the sandbox is built (or why it could not be).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report {
    Ready,
    Failed(String),
}

impl Sandbox {
    /// Starts the helper at `helper` (the `lamina` binary) with `args` (its subcommand) and
    /// waits until the sandbox is built and its workload started. Blocking.
    pub fn spawn(
        helper: &Path,
        args: &[&str],
        spec: &SandboxSpec,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Result<Sandbox, SandboxError> {
        let (ours, theirs) = UnixStream::pair().map_err(SandboxError::Spawn)?;
        let theirs_fd = theirs.as_raw_fd();
        let mut command = Command::new(helper);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(stderr)
            .env_clear();
        // SAFETY: the closure runs in the forked child before exec and calls only dup2, which
        // is async-signal-safe; it touches no memory the parent's other threads may hold.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(theirs_fd, CONTROL_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = on_launcher_thread(move || command.spawn()).map_err(SandboxError::Spawn)?;
        drop(theirs);
        let spec_json = serde_json::to_vec(spec).expect("a spec serializes");
        let written = child
            .stdin
            .take()
            .map(|mut stdin| stdin.write_all(&spec_json));
        if let Some(Err(err)) = written {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SandboxError::Control(format!("sending the spec: {err}")));
        }
        match receive_report(&ours) {
            Ok((Report::Ready, Some(fd))) => {
                let runtime_api = TcpListener::from(fd);
                Ok(Sandbox {
                    helper: child,
                    runtime_api,
                })
            }
            Ok((Report::Failed(reason), _)) => {
                let _ = child.wait();
                Err(SandboxError::Helper(reason))
            }
            Ok((Report::Ready, None)) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(SandboxError::Control(
                    "ready without a Runtime API socket".into(),
                ))
            }
            Err(err) => {
                let _ = child.kill();
                let status = child.wait().ok();
                Err(SandboxError::Control(format!(
                    "{err} (helper exit: {status:?})"
                )))
            }
        }
    }
}

/// Runs `work` on the launcher thread, a thread that lives as long as the process.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked a process exits, not when its process
/// does. Helpers forked from a pool thread would be killed when that thread retires; forked from
/// here, they die exactly when the server does.
fn on_launcher_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    type Job = Box<dyn FnOnce() + Send>;
    static LAUNCHER: std::sync::OnceLock<std::sync::mpsc::Sender<Job>> = std::sync::OnceLock::new();
    let launcher = LAUNCHER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("lamina-launcher".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
            })
            .expect("starting the sandbox launcher thread");
        tx
    });
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = tx.send(work());
    });
    launcher
        .send(job)
        .expect("the launcher thread runs for the life of the process");
    rx.recv().expect("the launcher thread answers every job")
}

fn receive_report(socket: &UnixStream) -> Result<(Report, Option<OwnedFd>), String> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let (bytes, fd) = {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| format!("receiving the report: {e}"))?;
        let mut fd = None;
        for message in msg.cmsgs().map_err(|e| e.to_string())? {
            if let ControlMessageOwned::ScmRights(fds) = message {
                for raw in fds {
                    // SAFETY: SCM_RIGHTS just gave this process a new descriptor that nothing
                    // else owns; wrapping it makes it closed exactly once.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    fd.get_or_insert(owned);
                }
            }
        }
        (msg.bytes, fd)
    };
    if bytes == 0 {
        return Err("the helper exited before reporting".into());
    }
    let report = serde_json::from_slice(&buf[..bytes]).map_err(|e| format!("bad report: {e}"))?;
    Ok((report, fd))
}

/// Reads the spec the server wrote to the helper's stdin.
pub(crate) fn read_spec() -> Result<SandboxSpec, String> {
    let mut text = Vec::new();
    std::io::stdin()
        .read_to_end(&mut text)
        .map_err(|e| format!("reading the spec: {e}"))?;
    serde_json::from_slice(&text).map_err(|e| format!("parsing the spec: {e}"))
}
