//! The AWS SDK the managed Python runtimes carry, as Lambda's do: functions `import boto3`
//! without bundling it, and a function that bundles its own copy gets its own (the SDK comes
//! after `/var/task` and `/opt/python` on the path).
//!
//! A pinned boto3 and botocore are installed from PyPI, once per machine, into a directory
//! every server shares (the *SDK directory*); sandboxes see it read-only at `/var/runtime/sdk`.
//! Installing is serialised across servers by a lock file, and the packages appear in the
//! directory the sandboxes mount only once they are complete.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The boto3 and botocore the Python runtimes carry.
pub const BOTO3_VERSION: &str = "1.44.5";

/// Where sandboxes see the SDK directory.
pub const MOUNT_POINT: &str = "/var/runtime/sdk";

/// The directory of the Python SDK inside the SDK directory.
pub fn python_dir(sdk_dir: &Path) -> PathBuf {
    sdk_dir.join("python")
}

fn marker(sdk_dir: &Path) -> PathBuf {
    python_dir(sdk_dir).join(format!(".lamina-boto3-{BOTO3_VERSION}"))
}

/// Whether the pinned Python SDK is installed in `sdk_dir`.
pub fn python_installed(sdk_dir: &Path) -> bool {
    marker(sdk_dir).exists()
}

/// The default SDK directory: `$XDG_CACHE_HOME/lamina/sdk`, else `~/.cache/lamina/sdk`.
pub fn default_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".cache")
        });
    cache.join("lamina").join("sdk")
}

/// Installs the pinned boto3 and botocore into `sdk_dir` with `python`'s pip, unless they are
/// there; returns whether it installed them. Blocking (it runs pip, which downloads from PyPI).
pub fn install_python(sdk_dir: &Path, python: &Path) -> io::Result<bool> {
    let target = python_dir(sdk_dir);
    fs::create_dir_all(&target)?;
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(sdk_dir.join(".lock"))?;
    // Held until this returns (the file closes): another server installing waits here.
    lock.lock()?;
    if python_installed(sdk_dir) {
        return Ok(false);
    }
    let staging = sdk_dir.join(format!(".staging-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    let output = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--no-input", "--only-binary=:all:", "--target"])
        .arg(&staging)
        .arg(format!("boto3=={BOTO3_VERSION}"))
        .arg(format!("botocore=={BOTO3_VERSION}"))
        .output()?;
    if !output.status.success() {
        let _ = fs::remove_dir_all(&staging);
        return Err(io::Error::other(format!(
            "pip install boto3=={BOTO3_VERSION} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    // Moved entry by entry into the directory sandboxes already mount (a new directory in its
    // place would not be seen through their mounts); the marker goes last.
    for entry in fs::read_dir(&staging)? {
        let entry = entry?;
        let destination = target.join(entry.file_name());
        if destination.exists() {
            if destination.is_dir() {
                fs::remove_dir_all(&destination)?;
            } else {
                fs::remove_file(&destination)?;
            }
        }
        fs::rename(entry.path(), destination)?;
    }
    fs::remove_dir_all(&staging)?;
    fs::write(marker(sdk_dir), BOTO3_VERSION)?;
    Ok(true)
}
