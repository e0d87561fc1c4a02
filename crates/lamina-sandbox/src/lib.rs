//! Linux isolation for execution environments.
//!
//! A sandbox is set up by a *helper*: the `lamina` binary re-executed (`lamina sandbox-helper`),
//! single-threaded from its first instruction, as Firecracker's jailer is. The multi-threaded
//! server only spawns it through `std::process::Command` (fork + exec, with nothing but `dup2`
//! in between) and talks to it over a control socket. A sandbox comes to life in two steps, so
//! that the first can be done ahead of time (a pool of sandboxes waiting for functions):
//!
//! **Build** ([`Sandbox::build`]). The helper
//! 1. joins the instance's cgroups, so everything it starts is limited and accounted (on cgroup
//!    v1 the first join costs an RCU grace period, ~10 ms here: the reason to build ahead);
//! 2. unshares mount, PID, IPC, UTS and network namespaces and forks: the child is PID 1 of the
//!    new PID namespace (an init that reaps orphans), and dies with the helper, which dies with
//!    the server (`PR_SET_PDEATHSIG`; helpers are forked from one thread that lives as long as
//!    the server, since the signal follows the forking *thread*), so no sandbox process outlives
//!    the server. On cgroup v1 a frozen process cannot act on SIGKILL, so the helper stays out of
//!    the freezer cgroup and, on its parent's death, thaws the sandbox before it kills init;
//! 3. assembles a root filesystem on a tmpfs from read-only bind mounts of the host's system
//!    directories, empty `/var/task` and `/opt`, a writable `/tmp`, its own `/proc` and a
//!    minimal `/dev`, and `pivot_root`s into it;
//! 4. brings up loopback in the sandbox's own network namespace and creates the Runtime API's
//!    listening socket *there*, handing it to the server over the control socket: the function
//!    can reach the server's Runtime API and nothing else — not the host's loopback services;
//! 5. optionally starts a *zygote*: the workload, before there is any code, blocked reading its
//!    assignment from descriptor [`ASSIGNMENT_FD`] (an interpreter with its runtime loaded).
//!
//! **Assign** ([`Sandbox::assign`]). The server sends the code as a detached read-only mount
//! (`open_tree`, passed over `SCM_RIGHTS`); init attaches it at `/var/task` (and layers at
//! `/opt`), then either hands the zygote its assignment or starts the workload. A workload
//! drops every capability, becomes an unprivileged user, sets `no_new_privs`, rlimits and a
//! seccomp filter, and execs.
//!
//! Architecture invariant: the only crate with `unsafe`; it knows nothing of Lambda.

pub mod cgroup;
mod helper;
mod mount;
mod seccomp;
pub mod tmpfs;

use std::io::IoSlice;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde::{Deserialize, Serialize};

pub use cgroup::{Cgroup, CgroupRoot, Limits};
pub use helper::helper_main;

/// The file descriptor the control socket has in the helper (it arrives as stdin).
pub const CONTROL_FD: i32 = 3;
/// The file descriptor on which a zygote reads its assignment (until end of file).
pub const ASSIGNMENT_FD: i32 = 3;

/// A program to run inside the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workload {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
}

/// Everything the helper needs to build one sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// A directory on the host, empty, where the root is assembled (a tmpfs is mounted on it
    /// inside the sandbox's mount namespace only).
    pub root: PathBuf,
    /// Host directories (or symlinks) exposed read-only at the same path: `/usr`, `/lib`, ...
    pub system_paths: Vec<PathBuf>,
    /// What `/bin/sh` runs, when not the host's own: a host program mounted read-only over the
    /// file `/bin/sh` leads to (on Debian, `dash` gives way to `bash`, as on Lambda's images).
    pub sh: Option<PathBuf>,
    /// Host files exposed read-only under `/etc`.
    pub etc_files: Vec<PathBuf>,
    /// Mounted read-only at `/var/runtime` (the platform's runtime bootstraps), when given.
    pub runtime: Option<PathBuf>,
    /// Mounted read-only at `/var/runtime/sdk` (the SDKs the runtimes carry), when given; the
    /// directory `sdk` must exist under `runtime`.
    pub runtime_sdk: Option<PathBuf>,
    /// Mounted read-write at `/tmp`: a loop device holding an ext4 image (see [`tmpfs`]: on
    /// disk, of a fixed size), or else a host directory (on disk, without a size limit).
    pub tmp: PathBuf,
    pub hostname: String,
    pub uid: u32,
    pub gid: u32,
    /// The Runtime API listens on `127.0.0.1:<port>` inside the sandbox.
    pub runtime_api_port: u16,
    /// `cgroup.procs` files (one per controller) the helper joins before anything else.
    pub cgroup_procs: Vec<PathBuf>,
    /// The freezer cgroup's directory: the sandbox's init joins it, the helper does not, so
    /// that if the server dies while the sandbox is frozen the helper can thaw it and kill it.
    pub freezer: Option<PathBuf>,
    pub max_open_files: u64,
    /// Started as soon as the sandbox is built, before it has code; it reads its assignment's
    /// message from [`ASSIGNMENT_FD`].
    pub zygote: Option<Workload>,
}

/// What a built sandbox is given to run.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// Mounted read-only at `/var/task`.
    pub code: PathBuf,
    /// Mounted read-only at `/opt`, when given.
    pub opt: Option<PathBuf>,
    /// Started now; `None` when the sandbox has a zygote.
    pub workload: Option<Workload>,
    /// Written to the zygote's [`ASSIGNMENT_FD`], which is then closed.
    pub message: Vec<u8>,
}

/// The assignment as it crosses the control socket; the mounts travel as descriptors.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AssignmentMessage {
    pub workload: Option<Workload>,
    pub message: Vec<u8>,
    pub with_opt: bool,
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
    control: UnixStream,
}

/// What the helper reports once a step is done (or why it could not be).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report {
    Ready,
    Failed(String),
}

impl Sandbox {
    /// Starts the helper at `helper` (the `lamina` binary) with `args` (its subcommand) and
    /// waits until the sandbox is built (and its zygote started). Blocking.
    pub fn build(
        helper: &Path,
        args: &[&str],
        spec: &SandboxSpec,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Result<Sandbox, SandboxError> {
        let (ours, theirs) = UnixStream::pair().map_err(SandboxError::Spawn)?;
        // The control socket is the helper's stdin: with no code to run between fork and exec,
        // std spawns with posix_spawn (a vfork-style clone) instead of copying the server's
        // page tables with fork, ~10x cheaper with a busy server. The helper moves it to
        // CONTROL_FD itself.
        let mut command = Command::new(helper);
        command
            .args(args)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(stdout)
            .stderr(stderr)
            .env_clear();
        let mut child = on_launcher_thread(move || command.spawn()).map_err(SandboxError::Spawn)?;
        let spec_json = serde_json::to_vec(spec).expect("a spec serializes");
        if let Err(err) = send_with_fds(&ours, &spec_json, &[]) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SandboxError::Control(format!("sending the spec: {err}")));
        }
        match receive_report(&ours) {
            Ok((Report::Ready, Some(fd))) => Ok(Sandbox {
                helper: child,
                runtime_api: TcpListener::from(fd),
                control: ours,
            }),
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

    /// Gives the built sandbox its code and starts (or releases) its workload; returns once
    /// the sandbox reports it done. Blocking, one round trip.
    pub fn assign(&self, assignment: &Assignment) -> Result<(), SandboxError> {
        let mount_error = |what: &str, path: &Path, e: std::io::Error| {
            SandboxError::Helper(format!("{what} {}: {e}", path.display()))
        };
        let code = mount::detached_read_only(&assignment.code)
            .map_err(|e| mount_error("detaching a mount of", &assignment.code, e))?;
        let opt = match &assignment.opt {
            Some(opt) => Some(
                mount::detached_read_only(opt)
                    .map_err(|e| mount_error("detaching a mount of", opt, e))?,
            ),
            None => None,
        };
        let message = AssignmentMessage {
            workload: assignment.workload.clone(),
            message: assignment.message.clone(),
            with_opt: opt.is_some(),
        };
        let payload = serde_json::to_vec(&message).expect("an assignment serializes");
        let fds: Vec<RawFd> = std::iter::once(code.as_raw_fd())
            .chain(opt.as_ref().map(|fd| fd.as_raw_fd()))
            .collect();
        send_with_fds(&self.control, &payload, &fds)
            .map_err(|e| SandboxError::Control(format!("sending the assignment: {e}")))?;
        match receive_report(&self.control) {
            Ok((Report::Ready, _)) => Ok(()),
            Ok((Report::Failed(reason), _)) => Err(SandboxError::Helper(reason)),
            Err(err) => Err(SandboxError::Control(err)),
        }
    }

    /// Watches for the helper's exit without a thread: a pidfd in tokio's reactor. Call it
    /// from within a tokio runtime.
    pub fn exit_watch(&self) -> std::io::Result<ExitWatch> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.helper.id() as libc::pid_t, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor; nothing else owns it.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        // SAFETY: the AsyncFd owns the descriptor for as long as it is registered and nothing
        // closes or replaces it meanwhile (ExitWatch gives no access to it).
        let watch = unsafe { tokio::io::unix::AsyncFd::register(pidfd)? };
        Ok(ExitWatch(watch))
    }
}

/// Becomes ready when a sandbox's helper has exited.
#[derive(Debug)]
pub struct ExitWatch(tokio::io::unix::AsyncFd<OwnedFd>);

impl ExitWatch {
    /// Returns once the helper has exited (it is then ready to be reaped without blocking).
    pub async fn wait(&self) {
        let _ = self.0.readable().await;
    }
}

/// Sends `payload` with `fds` attached (SCM_RIGHTS) in one message.
pub(crate) fn send_with_fds(
    socket: &UnixStream,
    payload: &[u8],
    fds: &[RawFd],
) -> Result<(), String> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let iov = [IoSlice::new(payload)];
    let cmsgs: Vec<ControlMessage<'_>> = if fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(fds)]
    };
    sendmsg::<()>(socket.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None)
        .map(|_| ())
        .map_err(|e| e.to_string())
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

/// Receives one message and the descriptors attached to it.
pub(crate) fn receive_with_fds(socket: &UnixStream) -> Result<(Vec<u8>, Vec<OwnedFd>), String> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut buf = vec![0u8; 256 * 1024];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let (bytes, fds) = {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| format!("receiving: {e}"))?;
        let mut fds = Vec::new();
        for message in msg.cmsgs().map_err(|e| e.to_string())? {
            if let ControlMessageOwned::ScmRights(received) = message {
                for raw in received {
                    // SAFETY: SCM_RIGHTS just gave this process a new descriptor that nothing
                    // else owns; wrapping it makes it closed exactly once.
                    fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
        }
        (msg.bytes, fds)
    };
    buf.truncate(bytes);
    Ok((buf, fds))
}

fn receive_report(socket: &UnixStream) -> Result<(Report, Option<OwnedFd>), String> {
    let (bytes, fds) = receive_with_fds(socket)?;
    if bytes.is_empty() {
        return Err("the helper exited before reporting".into());
    }
    let report = serde_json::from_slice(&bytes).map_err(|e| format!("bad report: {e}"))?;
    Ok((report, fds.into_iter().next()))
}

/// Receives the spec the server sent over the control socket.
pub(crate) fn read_spec(control: &UnixStream) -> Result<SandboxSpec, String> {
    let (text, _) = receive_with_fds(control)?;
    serde_json::from_slice(&text).map_err(|e| format!("parsing the spec: {e}"))
}
