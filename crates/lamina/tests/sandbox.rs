//! Isolation probes: real sandboxes built by the real `lamina sandbox-helper`, running shell
//! and Python probes as a function would. Needs root (CI runs as root); skipped otherwise.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lamina_sandbox::{Assignment, Cgroup, CgroupRoot, Limits, Sandbox, SandboxSpec, Workload};

const UID: u32 = 993;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: sandbox tests need root");
            return;
        }
    };
}

fn helper() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lamina"))
}

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

struct Probe {
    _dir: tempfile::TempDir,
    code: PathBuf,
    tmp: PathBuf,
    root: PathBuf,
    limits: Limits,
}

impl Probe {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (code, tmp, root) = (
            dir.path().join("code"),
            dir.path().join("tmp"),
            dir.path().join("root"),
        );
        for d in [&code, &tmp, &root] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(code.join("hello.txt"), "hello from the task\n").unwrap();
        let limits = Limits {
            memory_bytes: 128 << 20,
            cpu_shares: 74,
            pids_max: 64,
        };
        Probe {
            _dir: dir,
            code,
            tmp,
            root,
            limits,
        }
    }

    fn spec(&self, cgroup: &Cgroup) -> SandboxSpec {
        SandboxSpec {
            root: self.root.clone(),
            system_paths: ["/usr", "/bin", "/lib", "/lib64", "/sbin"]
                .map(PathBuf::from)
                .to_vec(),
            etc_files: ["/etc/ssl", "/etc/ld.so.cache", "/etc/localtime"]
                .map(PathBuf::from)
                .to_vec(),
            runtime: None,
            runtime_sdk: None,
            sh: Some(PathBuf::from("/usr/bin/bash")),
            tmp: self.tmp.clone(),
            hostname: "sandbox".into(),
            uid: UID,
            gid: UID,
            runtime_api_port: 9001,
            cgroup_procs: cgroup.procs_files(),
            freezer: cgroup.freezer_dir(),
            max_open_files: 1024,
            zygote: None,
        }
    }

    /// An assignment of the probe's code that runs `script`.
    fn assignment(&self, script: &str) -> Assignment {
        Assignment {
            code: self.code.clone(),
            opt: None,
            workload: Some(shell(script)),
            message: Vec::new(),
        }
    }

    /// Runs `script` in a sandbox; returns (exit code, stdout + stderr, whether OOM killed).
    fn run(&self, script: &str) -> (i32, String, bool) {
        let root = CgroupRoot::detect("tests").unwrap();
        let cgroup = root.create(&unique("test"), self.limits).unwrap();
        let mut sandbox = Sandbox::build(
            helper(),
            &["sandbox-helper"],
            &self.spec(&cgroup),
            Stdio::piped(),
            Stdio::piped(),
        )
        .unwrap();
        sandbox.assign(&self.assignment(script)).unwrap();
        // Answer on the Runtime API socket so probes can tell they reached it.
        let listener = sandbox.runtime_api.try_clone().unwrap();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let _ = stream.write_all(b"runtime-api\n");
            }
        });
        let mut err = String::new();
        let mut stderr = sandbox.helper.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            stderr.read_to_string(&mut err).unwrap();
            err
        });
        let mut out = String::new();
        sandbox
            .helper
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = sandbox.helper.wait().unwrap();
        let oom = cgroup.oom_killed();
        cgroup.destroy().unwrap();
        (
            status.code().unwrap_or(-1),
            out + &reader.join().unwrap(),
            oom,
        )
    }
}

fn shell(script: &str) -> Workload {
    Workload {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: "/var/task".into(),
    }
}

#[test]
fn runs_as_an_unprivileged_user_with_no_capabilities() {
    require_root!();
    let (code, out, _) = Probe::new().run(
        "id -u; id -g; grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status; \
         grep NoNewPrivs /proc/self/status; grep Seccomp: /proc/self/status",
    );
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..2], ["993", "993"], "{out}");
    for cap in [
        "CapPrm:\t0000000000000000",
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
    ] {
        assert!(out.contains(cap), "{cap} missing in {out}");
    }
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
}

#[test]
fn sees_only_its_own_processes_and_hostname() {
    require_root!();
    let (code, out, _) = Probe::new().run("ls /proc | grep -c '^[0-9]'; hostname");
    assert_eq!(code, 0, "{out}");
    let count: u32 = out.lines().next().unwrap().trim().parse().unwrap();
    assert!(count <= 4, "saw {count} processes: {out}");
    assert!(out.contains("sandbox"), "{out}");
}

#[test]
fn filesystem_is_read_only_except_tmp_and_hides_the_host() {
    require_root!();
    let script = r#"
        cat /var/task/hello.txt
        touch /var/task/x 2>/dev/null && echo WROTE-TASK
        touch /usr/x 2>/dev/null && echo WROTE-USR
        touch /x 2>/dev/null && echo WROTE-ROOT
        echo data > /tmp/file && echo TMP-OK
        for p in /root /work /home /etc/shadow /var/lib /sys; do test -e $p && echo VISIBLE:$p; done
        true
    "#;
    let probe = Probe::new();
    let (code, out, _) = probe.run(script);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("hello from the task"), "{out}");
    assert!(out.contains("TMP-OK"), "{out}");
    assert!(!out.contains("WROTE-"), "{out}");
    assert!(!out.contains("VISIBLE:"), "{out}");
    assert!(probe.tmp.join("file").exists());
}

#[test]
fn reaches_the_runtime_api_but_not_host_loopback_services() {
    require_root!();
    // 127.0.0.1:9001 is the Runtime API socket the server holds. PostgreSQL and Redis listen
    // on the host's loopback (5432, 6379) and must be unreachable, as must anything outside.
    let script = r#"python3 -c '
import socket
s = socket.create_connection(("127.0.0.1", 9001), 2); print(s.recv(100).decode().strip())
for port in (5432, 6379, 9000, 22):
    try:
        socket.create_connection(("127.0.0.1", port), 1); print("REACHED", port)
    except OSError:
        print("refused", port)
try:
    socket.create_connection(("1.1.1.1", 53), 1); print("REACHED outside")
except OSError:
    print("no route")
'"#;
    let (code, out, _) = Probe::new().run(script);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("runtime-api"), "{out}");
    assert!(!out.contains("REACHED"), "{out}");
}

#[test]
fn memory_limit_kills_the_function() {
    require_root!();
    let (code, out, oom) =
        Probe::new().run("python3 -c 'x = bytearray(300 * 1024 * 1024); print(len(x))'");
    assert_ne!(code, 0, "{out}");
    assert!(oom, "the cgroup saw no OOM kill: {out}");
}

#[test]
fn process_limit_holds() {
    require_root!();
    let mut probe = Probe::new();
    probe.limits.pids_max = 16;
    let (_, out, _) = probe.run("for i in $(seq 40); do sleep 2 & done; echo done");
    assert!(
        out.contains("fork") || out.contains("Resource temporarily unavailable"),
        "{out}"
    );
}

#[test]
fn dangerous_syscalls_are_refused() {
    require_root!();
    let script = r#"python3 -c '
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
calls = [
    ("unshare", lambda: libc.unshare(0x10000000)),
    ("mount", lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
    ("ptrace", lambda: libc.ptrace(16, 1, 0, 0)),
]
for name, call in calls:
    print(name, call(), os.strerror(ctypes.get_errno()))
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0); print("fork ok")
'"#;
    let (code, out, _) = Probe::new().run(script);
    assert_eq!(code, 0, "{out}");
    for name in ["unshare", "mount", "ptrace"] {
        assert!(
            out.contains(&format!("{name} -1 Operation not permitted")),
            "{name}: {out}"
        );
    }
    assert!(out.contains("fork ok"), "{out}");
}

#[test]
fn two_sandboxes_do_not_share_tmp() {
    require_root!();
    let (a, b) = (Probe::new(), Probe::new());
    assert_eq!(a.run("echo secret > /tmp/a").0, 0);
    let (_, out, _) = b.run("ls /tmp; cat /tmp/a 2>&1");
    assert!(!out.contains("secret"), "{out}");
}

#[test]
fn destroying_the_cgroup_kills_every_process() {
    require_root!();
    let probe = Probe::new();
    let cgroup = CgroupRoot::detect("tests")
        .unwrap()
        .create(&unique("kill"), probe.limits)
        .unwrap();
    let marker = unique("sleep-marker");
    let mut sandbox = Sandbox::build(
        helper(),
        &["sandbox-helper"],
        &probe.spec(&cgroup),
        Stdio::null(),
        Stdio::null(),
    )
    .unwrap();
    sandbox
        .assign(&probe.assignment(&format!(
            "sleep 300 & sleep 300 & exec -a {marker} sleep 300"
        )))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    cgroup.destroy().unwrap();
    let status = sandbox.helper.wait().unwrap();
    assert!(!status.success());
    assert!(started.elapsed() < Duration::from_secs(2));
    let leftover = Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .unwrap();
    assert!(
        leftover.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&leftover.stdout)
    );
}

#[test]
fn build_and_assignment_failures_are_reported_not_hung() {
    require_root!();
    let probe = Probe::new();
    let root = CgroupRoot::detect("tests").unwrap();
    let cgroup = root.create(&unique("fail"), probe.limits).unwrap();
    let mut spec = probe.spec(&cgroup);
    spec.runtime = Some(PathBuf::from("/nonexistent/runtime"));
    let err = Sandbox::build(
        helper(),
        &["sandbox-helper"],
        &spec,
        Stdio::null(),
        Stdio::null(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/runtime"), "{err}");
    cgroup.destroy().unwrap();

    let cgroup = root.create(&unique("fail"), probe.limits).unwrap();
    let sandbox = Sandbox::build(
        helper(),
        &["sandbox-helper"],
        &probe.spec(&cgroup),
        Stdio::null(),
        Stdio::null(),
    )
    .unwrap();
    let mut assignment = probe.assignment("true");
    assignment.code = PathBuf::from("/nonexistent/code");
    let err = sandbox.assign(&assignment).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/code"), "{err}");
    cgroup.destroy().unwrap();
}

/// Runs a sandbox whose zygote is `script`, assigned `message`; returns its output.
fn zygote(probe: &Probe, script: &str, message: &[u8]) -> Result<String, String> {
    let cgroup = CgroupRoot::detect("tests")
        .unwrap()
        .create(&unique("zygote"), probe.limits)
        .unwrap();
    let mut spec = probe.spec(&cgroup);
    spec.zygote = Some(shell(script));
    let mut sandbox = Sandbox::build(
        helper(),
        &["sandbox-helper"],
        &spec,
        Stdio::piped(),
        Stdio::null(),
    )
    .unwrap();
    // The zygote is running already, waiting: give it a moment to prove it waits.
    std::thread::sleep(Duration::from_millis(100));
    let assigned = sandbox.assign(&Assignment {
        code: probe.code.clone(),
        opt: None,
        workload: None,
        message: message.to_vec(),
    });
    let result = match assigned {
        Ok(()) => {
            let mut out = String::new();
            sandbox
                .helper
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            sandbox.helper.wait().unwrap();
            Ok(out)
        }
        Err(err) => Err(err.to_string()),
    };
    cgroup.destroy().unwrap();
    result
}

#[test]
fn a_zygote_waits_for_its_assignment_then_sees_the_code() {
    require_root!();
    let probe = Probe::new();
    let out = zygote(
        &probe,
        "ls /var/task | wc -l; read -r line <&3; echo \"got $line\"; cat /var/task/hello.txt",
        b"the assignment\n",
    )
    .unwrap();
    assert_eq!(out, "0\ngot the assignment\nhello from the task\n");
}

#[test]
fn a_zygote_that_died_before_its_assignment_is_refused() {
    require_root!();
    let probe = Probe::new();
    let err = zygote(&probe, "exit 0", b"{}").unwrap_err();
    assert!(
        err.contains("the zygote exited before its assignment"),
        "{err}"
    );
}
