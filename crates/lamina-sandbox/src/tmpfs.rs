//! `/tmp` as Lambda has it: on disk (so a full `/tmp` is reclaimable page cache, not memory the
//! function is charged for and cannot give back) and of a fixed size (`EphemeralStorage`).
//!
//! Each instance gets a sparse copy of an empty ext4 image of its size (made once per size with
//! `mke2fs`, then copied in about a millisecond: only its metadata blocks hold data), attached to
//! a loop device with autoclear by the server ([`attach`]) and mounted by the helper inside the
//! sandbox's mount namespace, so the device lets go when the sandbox's mount does.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use nix::unistd::{Whence, lseek};

/// From `linux/loop.h`.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Writes at `dest` a fresh `/tmp` image of `size_mb`, owned inside by `uid:gid`, from the
/// template for that size in `templates` (made on first use).
pub fn prepare_image(
    templates: &Path,
    size_mb: u32,
    uid: u32,
    gid: u32,
    dest: &Path,
) -> io::Result<()> {
    std::fs::create_dir_all(templates)?;
    let template = templates.join(format!("ext4-{size_mb}M-{uid}-{gid}.img"));
    // The first instances of a size start together; one makes the template, the rest wait
    // for it rather than writing the same staging file at once.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let making = MAKING.lock().unwrap_or_else(|p| p.into_inner());
    if !template.exists() {
        let staging = templates.join(format!(".{size_mb}M-{}.img", std::process::id()));
        File::create(&staging)?.set_len(u64::from(size_mb) << 20)?;
        let status = Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-m", "0", "-O", "^has_journal"])
            .arg("-E")
            .arg(format!(
                "lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner={uid}:{gid}"
            ))
            .arg(&staging)
            .status()?;
        if !status.success() {
            let _ = std::fs::remove_file(&staging);
            return Err(io::Error::other(format!("mke2fs failed: {status}")));
        }
        std::fs::rename(&staging, &template)?;
    }
    drop(making);
    sparse_copy(&template, dest)
}

/// Copies only the data regions of `from`; holes stay holes.
fn sparse_copy(from: &Path, to: &Path) -> io::Result<()> {
    let source = File::open(from)?;
    let len = source.metadata()?.len();
    let target = OpenOptions::new().write(true).create_new(true).open(to)?;
    target.set_len(len)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut offset: i64 = 0;
    while (offset as u64) < len {
        let start = match lseek(&source, offset, Whence::SeekData) {
            Ok(start) => start,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(err) => return Err(err.into()),
        };
        let end = lseek(&source, start, Whence::SeekHole)?;
        let mut at = start;
        while at < end {
            let want = ((end - at) as usize).min(buf.len());
            let read = source.read_at(&mut buf[..want], at as u64)?;
            if read == 0 {
                break;
            }
            target.write_all_at(&buf[..read], at as u64)?;
            at += read as i64;
        }
        offset = end;
    }
    Ok(())
}

/// A loop device attached to a `/tmp` image. Holding it keeps the device; once the helper has
/// mounted it, drop it: the device is detached when the mount goes (autoclear).
#[derive(Debug)]
pub struct LoopDevice {
    _device: File,
    pub path: std::path::PathBuf,
}

/// Attaches `image` to a free loop device.
///
/// Concurrent attaches are the rule when many sandboxes are built at once, and the kernel hands
/// every caller of `LOOP_CTL_GET_FREE` the same free device: attaches in this process take
/// turns, and losing the race to another process is retried.
pub fn attach(image: &Path) -> io::Result<LoopDevice> {
    static ATTACHING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ATTACHING.lock().unwrap_or_else(|p| p.into_inner());
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    let backing = OpenOptions::new().read(true).write(true).open(image)?;
    for attempt in 0..200 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if number < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = std::path::PathBuf::from(format!("/dev/loop{number}"));
        let device = OpenOptions::new().read(true).write(true).open(&path)?;
        // SAFETY: LoopConfig is plain old data matching `struct loop_config`; all-zero is a
        // valid value for every field.
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = backing.as_raw_fd() as u32;
        config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        // SAFETY: LOOP_CONFIGURE reads one `struct loop_config` from the pointer, which
        // points at `config`, alive for the call.
        let result = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &config) };
        if result == 0 {
            return Ok(LoopDevice {
                _device: device,
                path,
            });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(err);
        }
        // Another process took it between the two calls; let it finish.
        std::thread::sleep(std::time::Duration::from_micros(100 * (attempt % 10 + 1)));
    }
    Err(io::Error::other("no free loop device after 200 attempts"))
}

/// Mounts the ext4 `/tmp` on loop device `device` at `target` (nosuid, nodev). Runs in the
/// helper, inside the sandbox's mount namespace.
pub(crate) fn mount_device(device: &Path, target: &Path) -> Result<(), String> {
    let flags = nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV;
    nix::mount::mount(Some(device), target, Some("ext4"), flags, None::<&str>)
        .map_err(|e| format!("mounting {} at {}: {e}", device.display(), target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copy_keeps_data_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("a");
        let file = File::create(&from).unwrap();
        file.set_len(64 << 20).unwrap();
        file.write_all_at(b"head", 0).unwrap();
        file.write_all_at(b"tail", (64 << 20) - 4).unwrap();
        let to = dir.path().join("b");
        sparse_copy(&from, &to).unwrap();
        let copy = File::open(&to).unwrap();
        let mut buf = [0u8; 4];
        copy.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"head");
        copy.read_exact_at(&mut buf, (64 << 20) - 4).unwrap();
        assert_eq!(&buf, b"tail");
        use std::os::unix::fs::MetadataExt;
        assert!(
            copy.metadata().unwrap().blocks() * 512 < 1 << 20,
            "holes stayed holes"
        );
    }
}
