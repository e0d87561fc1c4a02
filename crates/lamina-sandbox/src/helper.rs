//! The sandbox helper: runs in a fresh, single-threaded process (`lamina sandbox-helper`).
//! See the crate documentation for the sequence; each step's failure is reported to the server
//! over the control socket before the helper exits.

use std::ffi::CString;
use std::fs;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::prctl;
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork};
use seccompiler::BpfProgram;

use crate::{
    ASSIGNMENT_FD, AssignmentMessage, CONTROL_FD, Report, SandboxSpec, Workload, mount, read_spec,
    receive_with_fds, seccomp, send_with_fds,
};

/// Device nodes of the host a function may use.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// The sandbox's `freezer.state`, open for writing, and its init's pid: what the helper needs
/// to take the sandbox down from a signal handler when the server dies.
static FREEZER_STATE: AtomicI32 = AtomicI32::new(-1);
static INIT_PID: AtomicI32 = AtomicI32::new(0);

/// The helper's parent-death signal handler: a frozen sandbox cannot die, so thaw it first,
/// then kill init (which takes the whole PID namespace along), then go.
extern "C" fn on_server_death(_: libc::c_int) {
    // SAFETY: write, kill and _exit are async-signal-safe; the descriptor and pid were stored
    // before the handler could run and are only read here.
    unsafe {
        let state = FREEZER_STATE.load(Ordering::Relaxed);
        if state >= 0 {
            libc::write(state, b"THAWED".as_ptr().cast(), 6);
        }
        let init = INIT_PID.load(Ordering::Relaxed);
        if init > 0 {
            libc::kill(init, libc::SIGKILL);
        }
        libc::_exit(1);
    }
}

/// The helper's whole life; never returns.
pub fn helper_main() -> ! {
    // The control socket arrives as stdin; it moves to CONTROL_FD, and stdin becomes
    // /dev/null, so that nothing the sandbox starts inherits a way back to the server.
    // SAFETY: dup2 of stdin onto CONTROL_FD, which nothing in this fresh process holds.
    if unsafe { libc::dup2(0, CONTROL_FD) } < 0 {
        std::process::exit(1);
    }
    // SAFETY: CONTROL_FD now holds the control socket, and no other code here owns it.
    let control = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    let handler = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_server_death),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::all(),
    );
    // SAFETY: the handler only makes async-signal-safe calls (see on_server_death).
    if let Err(err) = unsafe { nix::sys::signal::sigaction(Signal::SIGTERM, &handler) } {
        fail(&control, format!("SIGTERM handler: {err}"));
    }
    if let Err(err) = prctl::set_pdeathsig(Signal::SIGTERM) {
        fail(&control, format!("PR_SET_PDEATHSIG: {err}"));
    }
    if nix::unistd::getppid() == Pid::from_raw(1) {
        // The server died before the death signal was armed.
        std::process::exit(1);
    }
    let spec = read_spec(&control).unwrap_or_else(|e| fail(&control, e));
    if let Err(err) = stdin_from_dev_null() {
        fail(&control, err);
    }
    let pid = std::process::id().to_string();
    for procs in &spec.cgroup_procs {
        if let Err(err) = fs::write(procs, &pid) {
            fail(&control, format!("joining {}: {err}", procs.display()));
        }
    }
    if let Some(freezer) = &spec.freezer {
        let state = fs::OpenOptions::new()
            .write(true)
            .open(freezer.join("freezer.state"))
            .unwrap_or_else(|e| fail(&control, format!("opening the freezer: {e}")));
        // Kept open (and close-on-exec) for the life of the helper, for on_server_death.
        FREEZER_STATE.store(
            std::os::fd::IntoRawFd::into_raw_fd(state),
            Ordering::Relaxed,
        );
    }
    let filters = seccomp::filters().unwrap_or_else(|e| fail(&control, format!("seccomp: {e}")));
    let namespaces = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWNET;
    if let Err(err) = unshare(namespaces) {
        fail(&control, format!("unshare: {err}"));
    }
    // SAFETY: this process is single-threaded (it was exec'ed fresh and started no threads),
    // so the child may run arbitrary code after fork.
    match unsafe { fork() } {
        Err(err) => fail(&control, format!("fork: {err}")),
        Ok(ForkResult::Child) => init(spec, control, filters),
        Ok(ForkResult::Parent { child }) => {
            INIT_PID.store(child.as_raw(), Ordering::Relaxed);
            drop(control);
            std::process::exit(wait_exit_code(child));
        }
    }
}

/// PID 1 of the sandbox: builds the root, hands over the Runtime API socket, starts the
/// zygote if there is one, waits for its assignment, starts the workload, reaps orphans, and
/// exits with the workload's status.
fn init(spec: SandboxSpec, control: UnixStream, filters: Vec<BpfProgram>) -> ! {
    if let Err(err) = prctl::set_pdeathsig(Signal::SIGKILL) {
        fail(&control, format!("PR_SET_PDEATHSIG: {err}"));
    }
    // Everything from init down can be frozen; "0" is the writing process.
    if let Some(freezer) = &spec.freezer
        && let Err(err) = fs::write(freezer.join("cgroup.procs"), "0")
    {
        fail(&control, format!("joining the freezer: {err}"));
    }
    if let Err(err) = build_root(&spec) {
        fail(&control, err);
    }
    if let Err(err) = loopback_up() {
        fail(&control, format!("bringing up loopback: {err}"));
    }
    let listener = TcpListener::bind(("127.0.0.1", spec.runtime_api_port))
        .unwrap_or_else(|e| fail(&control, format!("Runtime API socket: {e}")));
    let zygote = spec.zygote.as_ref().map(|workload| {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .unwrap_or_else(|e| fail(&control, format!("the zygote's pipe: {e}")));
        let pid = start(&spec, workload, &filters, Some(read), &control);
        (pid, write)
    });
    if let Err(err) = report(&control, &Report::Ready, Some(listener.as_raw_fd())) {
        eprintln!("lamina sandbox: reporting to the server failed: {err}");
        std::process::exit(1);
    }
    drop(listener);

    // Built: wait for the assignment. End of file means the server let the sandbox go.
    let (message, fds) = match receive_with_fds(&control) {
        Ok((message, _)) if message.is_empty() => std::process::exit(0),
        Ok(received) => received,
        Err(err) => fail(&control, format!("receiving the assignment: {err}")),
    };
    let assignment: AssignmentMessage = serde_json::from_slice(&message)
        .unwrap_or_else(|e| fail(&control, format!("parsing the assignment: {e}")));
    let mut mounts = fds.into_iter();
    let code = mounts
        .next()
        .unwrap_or_else(|| fail(&control, "an assignment without code"));
    if let Err(err) = mount::attach(&code, Path::new("/var/task")) {
        fail(&control, format!("attaching the code at /var/task: {err}"));
    }
    if assignment.with_opt {
        let opt = mounts
            .next()
            .unwrap_or_else(|| fail(&control, "an assignment without its /opt"));
        if let Err(err) = mount::attach(&opt, Path::new("/opt")) {
            fail(&control, format!("attaching /opt: {err}"));
        }
    }
    let workload = match (zygote, &assignment.workload) {
        (Some((pid, pipe)), None) => {
            // The zygote must still be waiting; one that died in the pool is no sandbox.
            if !matches!(
                waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::StillAlive)
            ) {
                fail(&control, "the zygote exited before its assignment");
            }
            let mut pipe = fs::File::from(pipe);
            if let Err(err) = std::io::Write::write_all(&mut pipe, &assignment.message) {
                fail(
                    &control,
                    format!("handing the zygote its assignment: {err}"),
                );
            }
            pid
        }
        (None, Some(workload)) => start(&spec, workload, &filters, None, &control),
        _ => fail(&control, "an assignment that does not fit the sandbox"),
    };
    drop((code, mounts));
    if let Err(err) = report(&control, &Report::Ready, None) {
        eprintln!("lamina sandbox: reporting to the server failed: {err}");
        std::process::exit(1);
    }
    drop(control);
    reap_until(workload)
}

/// Forks and execs `workload`; `assignment` becomes its [`ASSIGNMENT_FD`].
fn start(
    spec: &SandboxSpec,
    workload: &Workload,
    filters: &[BpfProgram],
    assignment: Option<OwnedFd>,
    control: &UnixStream,
) -> Pid {
    // SAFETY: init is single-threaded, as its parent was.
    match unsafe { fork() } {
        Err(err) => fail(control, format!("fork: {err}")),
        Ok(ForkResult::Child) => {
            let err = exec_workload(spec, workload, filters, assignment.as_ref());
            eprintln!("lamina sandbox: cannot start {}: {err}", workload.program);
            std::process::exit(127);
        }
        Ok(ForkResult::Parent { child }) => child,
    }
}

fn reap_until(workload: Pid) -> ! {
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(status) if status.pid() == Some(workload) => {
                std::process::exit(exit_code(status));
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => std::process::exit(1),
        }
    }
}

fn wait_exit_code(child: Pid) -> i32 {
    loop {
        match waitpid(child, None) {
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                return exit_code(status);
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return 1,
        }
    }
}

fn exit_code(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, signal, _) => 128 + signal as i32,
        _ => 1,
    }
}

fn report(control: &UnixStream, report: &Report, fd: Option<RawFd>) -> Result<(), String> {
    let payload = serde_json::to_vec(report).expect("a report serializes");
    let fds: Vec<RawFd> = fd.into_iter().collect();
    send_with_fds(control, &payload, &fds)
}

fn fail(control: &UnixStream, message: impl Into<String>) -> ! {
    let message = message.into();
    if report(control, &Report::Failed(message.clone()), None).is_err() {
        eprintln!("lamina sandbox: {message}");
    }
    std::process::exit(1);
}

fn stdin_from_dev_null() -> Result<(), String> {
    let null = fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    // SAFETY: dup2 onto fd 0 replaces stdin, which nothing in this process holds any more.
    if unsafe { libc::dup2(null.as_raw_fd(), 0) } < 0 {
        return Err(format!("stdin: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn mount_err(what: &str, target: &Path, err: nix::errno::Errno) -> String {
    format!("mounting {what} at {}: {err}", target.display())
}

/// A read-only, nosuid, nodev bind mount of `source` at `target`.
fn bind_read_only(source: &Path, target: &Path) -> Result<(), String> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| mount_err(&source.display().to_string(), target, e))?;
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV;
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .map_err(|e| mount_err("read-only", target, e))
}

fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Creates the mount point for `source` under `target`: a directory or an empty file.
fn mount_point(source: &Path, target: &Path) -> Result<(), String> {
    let io = |e: std::io::Error| format!("creating {}: {e}", target.display());
    if source.is_dir() {
        fs::create_dir_all(target).map_err(io)
    } else {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io)?;
        }
        fs::write(target, b"").map_err(io)
    }
}

/// Mounts `program` over the file that `/bin/sh` of the assembled `root` leads to, unless that
/// already is `program`.
fn replace_sh(root: &Path, program: &Path) -> Result<(), String> {
    let target = resolve_in(root, Path::new("/bin/sh"))
        .ok_or_else(|| "/bin/sh does not lead to a file inside the sandbox".to_owned())?;
    let same = |a: &Path, b: &Path| fs::canonicalize(a).ok() == fs::canonicalize(b).ok();
    if same(&target, program) {
        return Ok(());
    }
    bind_read_only(program, &target)
}

/// The file `path` leads to inside `root`, following every symlink on the way as the sandbox
/// will see it — an absolute link starts again at `root`, never at the host's `/` — or `None`
/// if it leads nowhere, out of `root`, or through too many links.
fn resolve_in(root: &Path, path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut pending: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_owned()),
            _ => None,
        })
        .collect();
    let mut resolved = root.to_path_buf();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            if resolved != root {
                resolved.pop();
            }
            continue;
        }
        let next = resolved.join(&name);
        match fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > 16 {
                    return None;
                }
                let link = fs::read_link(&next).ok()?;
                if link.is_absolute() {
                    resolved = root.to_path_buf();
                }
                for component in link.components().rev() {
                    match component {
                        Component::Normal(part) => pending.push(part.to_owned()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(_) => resolved = next,
            Err(_) => return None,
        }
    }
    let meta = fs::symlink_metadata(&resolved).ok()?;
    (meta.is_file() && resolved.starts_with(root)).then_some(resolved)
}

fn build_root(spec: &SandboxSpec) -> Result<(), String> {
    let root = &spec.root;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| mount_err("private propagation", Path::new("/"), e))?;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=16m"),
    )
    .map_err(|e| mount_err("tmpfs", root, e))?;

    for path in &spec.system_paths {
        let target = inside(root, path);
        match fs::read_link(path) {
            // Merged-/usr hosts: /bin -> usr/bin and the like stay symlinks.
            Ok(link) => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                symlink(&link, &target)
                    .map_err(|e| format!("linking {}: {e}", target.display()))?;
            }
            Err(_) if path.exists() => {
                mount_point(path, &target)?;
                bind_read_only(path, &target)?;
            }
            Err(_) => {}
        }
    }

    if let Some(sh) = &spec.sh {
        replace_sh(root, sh)?;
    }

    let etc = root.join("etc");
    fs::create_dir_all(&etc).map_err(|e| e.to_string())?;
    for file in &spec.etc_files {
        if !file.exists() {
            continue;
        }
        let target = inside(root, file);
        mount_point(file, &target)?;
        bind_read_only(file, &target)?;
    }
    let write = |name: &str, text: String| {
        fs::write(etc.join(name), text).map_err(|e| format!("writing /etc/{name}: {e}"))
    };
    write(
        "passwd",
        format!(
            "root:x:0:0:root:/root:/sbin/nologin\nsbx_user:x:{}:{}::/tmp:/sbin/nologin\n",
            spec.uid, spec.gid
        ),
    )?;
    write("group", format!("root:x:0:\nsbx_user:x:{}:\n", spec.gid))?;
    write(
        "hosts",
        format!("127.0.0.1 localhost {}\n::1 localhost\n", spec.hostname),
    )?;
    write("hostname", format!("{}\n", spec.hostname))?;

    // Mount points for the code and the layers, attached when the sandbox is assigned.
    for dir in ["var/task", "opt"] {
        fs::create_dir_all(root.join(dir)).map_err(|e| e.to_string())?;
    }

    if let Some(runtime) = &spec.runtime {
        let target = root.join("var/runtime");
        fs::create_dir_all(&target).map_err(|e| e.to_string())?;
        bind_read_only(runtime, &target)?;
    }
    if let Some(sdk) = &spec.runtime_sdk {
        bind_read_only(sdk, &root.join("var/runtime/sdk"))?;
    }

    let tmp = root.join("tmp");
    fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let is_device = fs::metadata(&spec.tmp)
        .map(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
        .unwrap_or(false);
    if is_device {
        crate::tmpfs::mount_device(&spec.tmp, &tmp)?;
    } else {
        let owner = (Some(Uid::from_raw(spec.uid)), Some(Gid::from_raw(spec.gid)));
        nix::unistd::chown(&spec.tmp, owner.0, owner.1)
            .map_err(|e| format!("chown {}: {e}", spec.tmp.display()))?;
        mount(
            Some(&spec.tmp),
            &tmp,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| mount_err("/tmp", &tmp, e))?;
        mount(
            None::<&str>,
            &tmp,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None::<&str>,
        )
        .map_err(|e| mount_err("/tmp options", &tmp, e))?;
    }

    let proc_dir = root.join("proc");
    fs::create_dir_all(&proc_dir).map_err(|e| e.to_string())?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| mount_err("proc", &proc_dir, e))?;

    let dev = root.join("dev");
    fs::create_dir_all(&dev).map_err(|e| e.to_string())?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )
    .map_err(|e| mount_err("/dev", &dev, e))?;
    for device in DEVICES {
        let source = Path::new("/dev").join(device);
        if !source.exists() {
            continue;
        }
        let target = dev.join(device);
        fs::write(&target, b"").map_err(|e| e.to_string())?;
        mount(
            Some(&source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| mount_err(device, &target, e))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(name)).map_err(|e| e.to_string())?;
    }

    // pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only
    // the new root, with no directory for the old one to linger in.
    nix::unistd::chdir(root).map_err(|e| format!("chdir {}: {e}", root.display()))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| mount_err("read-only root", Path::new("/"), e))?;
    nix::unistd::sethostname(&spec.hostname).map_err(|e| format!("sethostname: {e}"))?;
    Ok(())
}

/// Sets IFF_UP on `lo` of the current network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: plain socket/ioctl calls on a descriptor this function owns, with an `ifreq`
    // it zero-initialises and that outlives both calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let _guard = OwnedFd::from_raw_fd(fd);
        let mut request: libc::ifreq = std::mem::zeroed();
        for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &request) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Drops every privilege and execs the workload; returns only on failure. `assignment`, when
/// given, becomes descriptor [`ASSIGNMENT_FD`]; no other descriptor but stdio survives.
fn exec_workload(
    spec: &SandboxSpec,
    workload: &Workload,
    filters: &[BpfProgram],
    assignment: Option<&OwnedFd>,
) -> String {
    let _ = nix::unistd::setsid();
    if let Err(err) = setrlimit(
        Resource::RLIMIT_NOFILE,
        spec.max_open_files,
        spec.max_open_files,
    ) {
        return format!("RLIMIT_NOFILE: {err}");
    }
    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
    if nix::unistd::chdir(workload.cwd.as_str()).is_err() {
        let _ = nix::unistd::chdir("/");
    }
    for capability in 0..=63 {
        // SAFETY: PR_CAPBSET_DROP takes an integer and touches no memory; EINVAL past the
        // last capability the kernel knows is expected and ignored.
        unsafe {
            libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0);
        }
    }
    let (uid, gid) = (Uid::from_raw(spec.uid), Gid::from_raw(spec.gid));
    if let Err(err) = nix::unistd::setgroups(&[]) {
        return format!("setgroups: {err}");
    }
    if let Err(err) = nix::unistd::setresgid(gid, gid, gid) {
        return format!("setresgid: {err}");
    }
    // Leaving uid 0 clears the permitted, effective and ambient capability sets.
    if let Err(err) = nix::unistd::setresuid(uid, uid, uid) {
        return format!("setresuid: {err}");
    }
    if let Err(err) = prctl::set_no_new_privs() {
        return format!("no_new_privs: {err}");
    }
    let mut keep_from = 3u32;
    if let Some(fd) = assignment {
        // SAFETY: dup2 onto ASSIGNMENT_FD; the duplicate is not close-on-exec, so it survives.
        if unsafe { libc::dup2(fd.as_raw_fd(), ASSIGNMENT_FD) } < 0 {
            return format!(
                "the assignment descriptor: {}",
                std::io::Error::last_os_error()
            );
        }
        keep_from = ASSIGNMENT_FD as u32 + 1;
    }
    // SAFETY: close_range takes integers only; every other descriptor above stderr belongs to
    // the helper and must not leak into the function.
    unsafe {
        libc::syscall(libc::SYS_close_range, keep_from, u32::MAX, 0u32);
    }
    for filter in filters {
        if let Err(err) = seccompiler::apply_filter(filter) {
            return format!("seccomp: {err}");
        }
    }
    let cstring = |s: &str| CString::new(s).unwrap_or_default();
    let program = cstring(&workload.program);
    let mut argv = vec![program.clone()];
    argv.extend(workload.args.iter().map(|a| cstring(a)));
    let env: Vec<CString> = workload
        .env
        .iter()
        .map(|(k, v)| cstring(&format!("{k}={v}")))
        .collect();
    match nix::unistd::execve(&program, &argv, &env) {
        Err(err) => format!("exec: {err}"),
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn paths_resolve_inside_the_root_whatever_their_links_say() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::write(root.join("usr/bin/dash"), b"").unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
        symlink("dash", root.join("usr/bin/sh")).unwrap();
        // Absolute links name the sandbox's paths, not the host's.
        symlink("/usr/bin", root.join("abs")).unwrap();
        symlink("/usr/bin/../bin/sh", root.join("usr/bin/round")).unwrap();
        symlink("../../../../etc/passwd", root.join("usr/bin/out")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        let dash = root.join("usr/bin/dash");
        assert_eq!(resolve_in(root, Path::new("/bin/sh")), Some(dash.clone()));
        assert_eq!(resolve_in(root, Path::new("/abs/sh")), Some(dash.clone()));
        assert_eq!(resolve_in(root, Path::new("/bin/round")), Some(dash));
        assert_eq!(
            resolve_in(root, Path::new("/bin/out")),
            None,
            "no file there"
        );
        assert_eq!(resolve_in(root, Path::new("/loop")), None);
        assert_eq!(resolve_in(root, Path::new("/bin")), None, "a directory");
    }
}
