//! Code packages on local disk, named by the SHA-256 of the zip: `<sha>.zip` as uploaded (what
//! GetFunction serves) and `<sha>/` unpacked (what the execution engine mounts as `/var/task`).
//! Identical uploads share one copy.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use lamina_core::function::CodeRef;
use lamina_core::{Error, Result};
use sha2::{Digest, Sha256};

use crate::archive;

#[derive(Debug, Clone)]
pub struct CodeStore {
    root: PathBuf,
}

impl CodeStore {
    pub fn open(root: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(root)?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    fn zip_path(&self, sha256: &str) -> PathBuf {
        self.root.join(format!("{sha256}.zip"))
    }

    /// The unpacked package of a stored zip.
    pub fn unpacked_dir(&self, sha256: &str) -> PathBuf {
        self.root.join(sha256)
    }

    /// Validates and stores a zip, durably, before any metadata refers to it. Blocking: call
    /// it from the blocking pool.
    pub fn put(&self, zip: &[u8]) -> Result<CodeRef> {
        let sha256 = hex::encode(Sha256::digest(zip));
        let unpacked = self.unpacked_dir(&sha256);
        let staging = self.root.join(format!(".staging-{sha256}-{}", unique()));
        let _ = fs::remove_dir_all(&staging);
        let unzipped_size = archive::unpack(zip, &staging, archive::MAX_UNZIPPED_BYTES)?;
        let io = |e: std::io::Error| Error::service(format!("storing the code package: {e}"));
        let zip_path = self.zip_path(&sha256);
        if !zip_path.exists() {
            let temp = self.root.join(format!(".{sha256}.zip.tmp-{}", unique()));
            let mut file = fs::File::create(&temp).map_err(io)?;
            file.write_all(zip).map_err(io)?;
            file.sync_all().map_err(io)?;
            fs::rename(&temp, &zip_path).map_err(io)?;
            fs::File::open(&self.root)
                .and_then(|dir| dir.sync_all())
                .map_err(io)?;
        }
        if unpacked.exists() {
            fs::remove_dir_all(&staging).map_err(io)?;
        } else {
            fs::rename(&staging, &unpacked).map_err(io)?;
        }
        Ok(CodeRef {
            sha256,
            size: zip.len() as u64,
            unzipped_size,
        })
    }

    /// The zip as uploaded.
    pub fn read_zip(&self, sha256: &str) -> std::io::Result<Vec<u8>> {
        if !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        fs::read(self.zip_path(sha256))
    }

    /// Removes every stored package not in `keep`, and staging left by a crash.
    pub fn sweep(&self, keep: &std::collections::BTreeSet<String>) -> std::io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let sha = name.strip_suffix(".zip").unwrap_or(&name);
            if name.starts_with('.') || !keep.contains(sha) {
                if entry.file_type()?.is_dir() {
                    fs::remove_dir_all(entry.path())?;
                } else {
                    fs::remove_file(entry.path())?;
                }
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// A name part no other staging directory of this process or an earlier one uses.
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::tests::build_zip;

    #[test]
    fn identical_uploads_share_one_copy_and_sweep_keeps_what_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = CodeStore::open(dir.path()).unwrap();
        let zip = build_zip(&[("index.py", "x = 1\n", 0o644)]);
        let a = store.put(&zip).unwrap();
        let b = store.put(&zip).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.unzipped_size, 6);
        assert_eq!(store.read_zip(&a.sha256).unwrap(), zip);
        assert!(store.unpacked_dir(&a.sha256).join("index.py").exists());
        let other = store.put(&build_zip(&[("b.py", "", 0o644)])).unwrap();
        let removed = store.sweep(&[a.sha256.clone()].into()).unwrap();
        assert_eq!(removed, 2);
        assert!(store.read_zip(&other.sha256).is_err());
        assert!(store.read_zip(&a.sha256).is_ok());
    }
}
