//! The one place zip packages are opened. Unpacking never writes outside its destination:
//! entry names that escape (`../x`, `/x`) are refused, as are absolute or escaping symlink
//! targets and entries whose path runs through a symlink the archive itself created. Sizes are
//! counted as bytes are written, not as the archive claims them. Unix modes are kept, less
//! setuid, setgid, sticky and write-for-others bits.

use std::fs;
use std::io::{self, Cursor, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use lamina_core::{Error, ErrorKind};

/// Lambda's limit on a direct upload.
pub const MAX_ZIPPED_BYTES: u64 = 50 * 1024 * 1024;
/// Lambda's limit on a function's unpacked code and layers.
pub const MAX_UNZIPPED_BYTES: u64 = 262_144_000;

fn unzip_error() -> Error {
    Error::invalid_parameter(
        "Could not unzip uploaded file. Please check your file, then try to upload again.",
    )
}

fn refused(what: impl std::fmt::Display) -> Error {
    Error::invalid_parameter(format!("The uploaded package was refused: {what}."))
}

fn io_error(err: io::Error) -> Error {
    Error::service(format!("unpacking the code package failed: {err}"))
}

/// Unpacks `zip` into `dest` (which must not exist) and returns the unpacked size in bytes.
/// On any error `dest` is removed again.
pub fn unpack(zip: &[u8], dest: &Path, max_unzipped: u64) -> Result<u64, Error> {
    if zip.len() as u64 > MAX_ZIPPED_BYTES {
        return Err(Error::new(
            ErrorKind::RequestTooLarge,
            format!("Zipped size must be smaller than {MAX_ZIPPED_BYTES} bytes"),
        ));
    }
    fs::create_dir_all(dest).map_err(io_error)?;
    let result = unpack_into(zip, dest, max_unzipped);
    if result.is_err() {
        let _ = fs::remove_dir_all(dest);
    }
    result
}

fn unpack_into(zip: &[u8], dest: &Path, max_unzipped: u64) -> Result<u64, Error> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).map_err(|_| unzip_error())?;
    let mut total = 0u64;
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(|_| unzip_error())?;
        let name = entry.name().map_err(|_| unzip_error())?.into_owned();
        let Some(relative) = entry.enclosed_name() else {
            return Err(refused(format_args!(
                "entry '{name}' escapes the package root"
            )));
        };
        if relative.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&relative);
        ensure_no_symlink_on_path(dest, &relative)?;
        let mode = entry.unix_mode();
        if entry.is_dir() {
            fs::create_dir_all(&target).map_err(io_error)?;
            fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).map_err(io_error)?;
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_error)?;
        }
        if entry.is_symlink() {
            let mut link = String::new();
            entry.read_to_string(&mut link).map_err(|_| unzip_error())?;
            check_symlink_target(&relative, &link)
                .map_err(|reason| refused(format_args!("symlink '{name}' -> '{link}' {reason}")))?;
            std::os::unix::fs::symlink(&link, &target).map_err(|err| match err.kind() {
                io::ErrorKind::AlreadyExists => refused(format_args!("'{name}' appears twice")),
                _ => io_error(err),
            })?;
            continue;
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(sanitize_mode(mode))
            .open(&target)
            .map_err(|err| match err.kind() {
                io::ErrorKind::AlreadyExists => refused(format_args!("'{name}' appears twice")),
                _ => io_error(err),
            })?;
        let budget = max_unzipped.saturating_sub(total);
        let written = copy_limited(&mut entry, &mut file, budget)?;
        total += written;
        if total > max_unzipped {
            return Err(Error::invalid_parameter(format!(
                "Unzipped size must be smaller than {max_unzipped} bytes"
            )));
        }
    }
    Ok(total)
}

/// Copies at most `budget + 1` bytes so an oversized entry is detected without writing it all.
fn copy_limited(from: &mut impl Read, to: &mut fs::File, budget: u64) -> Result<u64, Error> {
    let mut limited = from.take(budget.saturating_add(1));
    let mut buf = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        let n = match limited.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(_) => return Err(unzip_error()),
        };
        to.write_all(&buf[..n]).map_err(io_error)?;
        written += n as u64;
    }
    Ok(written)
}

/// Read for everyone, executable where the archive says so, writable by the owner only.
fn sanitize_mode(mode: Option<u32>) -> u32 {
    match mode {
        Some(mode) => (mode & 0o755) | 0o644,
        None => 0o644,
    }
}

/// Refuses an entry whose parent directories include a symlink: writing through it could land
/// anywhere the link points.
fn ensure_no_symlink_on_path(dest: &Path, relative: &Path) -> Result<(), Error> {
    let mut path = dest.to_path_buf();
    let mut components = relative.components().peekable();
    while let Some(component) = components.next() {
        path.push(component);
        if components.peek().is_none() {
            break;
        }
        if let Ok(meta) = fs::symlink_metadata(&path)
            && meta.file_type().is_symlink()
        {
            return Err(refused(format_args!(
                "entry '{}' is inside a symlink",
                relative.display()
            )));
        }
    }
    Ok(())
}

/// A symlink must be relative and stay inside the package when resolved from where it sits.
fn check_symlink_target(location: &Path, target: &str) -> Result<(), &'static str> {
    let target = Path::new(target);
    if target.is_absolute() || target.as_os_str().is_empty() {
        return Err("must be a relative path");
    }
    let mut depth: Vec<PathBuf> = location
        .parent()
        .map(|p| {
            p.components()
                .map(|c| PathBuf::from(c.as_os_str()))
                .collect()
        })
        .unwrap_or_default();
    for component in target.components() {
        match component {
            Component::Normal(part) => depth.push(PathBuf::from(part)),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return Err("points outside the package");
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err("must be a relative path"),
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    /// A zip built in memory from (name, contents, mode) entries; names ending in `/` are
    /// directories and contents starting with `->` make symlinks.
    pub fn build_zip(entries: &[(&str, &str, u32)]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, contents, mode) in entries {
            let options = SimpleFileOptions::default().unix_permissions(*mode);
            if name.ends_with('/') {
                writer.add_directory(*name, options).unwrap();
            } else if let Some(target) = contents.strip_prefix("->") {
                writer.add_symlink(*name, target, options).unwrap();
            } else {
                writer.start_file(*name, options).unwrap();
                writer.write_all(contents.as_bytes()).unwrap();
            }
        }
        writer.finish().unwrap().into_inner()
    }

    fn try_unpack(entries: &[(&str, &str, u32)]) -> Result<(tempfile::TempDir, u64), Error> {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("code");
        unpack(&build_zip(entries), &dest, MAX_UNZIPPED_BYTES).map(|size| (dir, size))
    }

    #[test]
    fn unpacks_files_dirs_links_and_keeps_modes() {
        let (dir, size) = try_unpack(&[
            ("bootstrap", "#!/bin/sh\n", 0o755),
            ("lib/", "", 0o755),
            ("lib/data.txt", "hello", 0o600),
            ("lib/link", "->data.txt", 0o777),
        ])
        .unwrap();
        let code = dir.path().join("code");
        assert_eq!(size, 15);
        let mode = |p: &str| fs::metadata(code.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("bootstrap"), 0o755);
        assert_eq!(mode("lib/data.txt"), 0o644);
        assert_eq!(fs::read_to_string(code.join("lib/link")).unwrap(), "hello");
    }

    #[test]
    fn refuses_escaping_entries_and_links() {
        let cases: &[&[(&str, &str, u32)]] = &[
            &[("../evil", "x", 0o644)],
            &[("a/../../evil", "x", 0o644)],
            &[("link", "->/etc/passwd", 0o777)],
            &[("link", "->../outside", 0o777)],
            &[("a/link", "->../../outside", 0o777)],
            &[("dirlink", "->.", 0o777), ("dirlink/x", "x", 0o644)],
        ];
        for entries in cases {
            let err = try_unpack(entries).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidParameterValue, "{entries:?}");
        }
    }

    #[test]
    fn refuses_garbage_and_oversized_content() {
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(b"not a zip", &dir.path().join("a"), MAX_UNZIPPED_BYTES).unwrap_err();
        assert!(err.message.contains("Could not unzip"));
        assert!(!dir.path().join("a").exists());
        let zip = build_zip(&[("big", &"x".repeat(2000), 0o644)]);
        let err = unpack(&zip, &dir.path().join("b"), 1000).unwrap_err();
        assert!(err.message.contains("Unzipped size"), "{}", err.message);
    }
}
