//! Function logs: each instance writes one log stream (`YYYY/MM/DD/[VERSION]<id>`) in its
//! function's log group (`/aws/lambda/NAME`). Lines are appended by one writer thread, so no
//! invocation waits on the disk; an invocation that asked for `Tail` captures its own lines.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// The most of one invocation's log kept for `X-Amz-Log-Result`.
pub const TAIL_BYTES: usize = 4096;

/// The writer thread's inbox.
#[derive(Clone, Debug)]
pub struct LogSink {
    tx: mpsc::Sender<(PathBuf, Vec<u8>)>,
    root: PathBuf,
}

impl LogSink {
    /// Starts the writer for logs under `root`.
    pub fn start(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let (tx, rx) = mpsc::channel::<(PathBuf, Vec<u8>)>();
        std::thread::Builder::new().name("lamina-logs".into()).spawn(move || {
            let mut open: HashMap<PathBuf, File> = HashMap::new();
            while let Ok((path, bytes)) = rx.recv() {
                if !open.contains_key(&path) {
                    if open.len() > 256 {
                        open.clear();
                    }
                    if let Some(parent) = path.parent() {
                        let _ = std::fs::create_dir_all(parent);
                    }
                    match OpenOptions::new().create(true).append(true).open(&path) {
                        Ok(file) => {
                            open.insert(path.clone(), file);
                        }
                        Err(err) => {
                            tracing::warn!(%err, path = %path.display(), "cannot open log stream");
                            continue;
                        }
                    }
                }
                if let Some(file) = open.get_mut(&path) {
                    let _ = file.write_all(&bytes);
                }
            }
        })?;
        Ok(Self {
            tx,
            root: root.to_owned(),
        })
    }

    /// Deletes log streams last written more than `age` ago, and log groups left empty.
    /// Returns how many streams went.
    pub fn remove_older_than(&self, age: std::time::Duration) -> std::io::Result<usize> {
        let cutoff = std::time::SystemTime::now() - age;
        let mut removed = 0;
        for group in std::fs::read_dir(&self.root)? {
            let group = group?.path();
            if !group.is_dir() {
                continue;
            }
            let mut left = 0;
            for stream in std::fs::read_dir(&group)? {
                let stream = stream?;
                if stream.metadata()?.modified()? < cutoff {
                    std::fs::remove_file(stream.path())?;
                    removed += 1;
                } else {
                    left += 1;
                }
            }
            if left == 0 {
                let _ = std::fs::remove_dir(&group);
            }
        }
        Ok(removed)
    }

    /// The stream `stream` of log group `group` (`/aws/lambda/NAME`).
    pub fn stream(&self, group: &str, stream: &str) -> LogStream {
        let group_dir = group.trim_start_matches('/').replace('/', "_");
        let file = stream.replace('/', "-") + ".log";
        LogStream {
            sink: self.clone(),
            path: self.root.join(group_dir).join(file),
            name: stream.to_owned(),
            capture: Arc::new(Mutex::new(None)),
        }
    }
}

/// One instance's log stream.
#[derive(Clone, Debug)]
pub struct LogStream {
    sink: LogSink,
    pub path: PathBuf,
    pub name: String,
    capture: Arc<Mutex<Option<Vec<u8>>>>,
}

impl LogStream {
    /// Appends one line (a newline is added).
    pub fn line(&self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        if let Some(buffer) = self
            .capture
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            buffer.extend_from_slice(&bytes);
            if buffer.len() > 4 * TAIL_BYTES {
                buffer.drain(..buffer.len() - TAIL_BYTES);
            }
        }
        let _ = self.sink.tx.send((self.path.clone(), bytes));
    }

    /// Starts keeping this invocation's lines for `Tail`.
    pub fn begin_capture(&self) {
        *self.capture.lock().unwrap_or_else(|p| p.into_inner()) = Some(Vec::new());
    }

    /// The last [`TAIL_BYTES`] captured since [`begin_capture`](Self::begin_capture).
    pub fn end_capture(&self) -> Vec<u8> {
        let mut captured = self
            .capture
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        if captured.len() > TAIL_BYTES {
            captured.drain(..captured.len() - TAIL_BYTES);
        }
        captured
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_removes_old_streams_only() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::start(dir.path()).unwrap();
        let old = sink.stream("/aws/lambda/a", "2020/01/01/[$LATEST]old");
        old.line("old line");
        let new = sink.stream("/aws/lambda/b", "2020/01/01/[$LATEST]new");
        new.line("new line");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !(old.path.exists() && new.path.exists()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86_400);
        File::options()
            .write(true)
            .open(&old.path)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let removed = sink
            .remove_older_than(std::time::Duration::from_secs(86_400))
            .unwrap();
        assert_eq!(removed, 1);
        assert!(!old.path.exists() && !old.path.parent().unwrap().exists());
        assert!(new.path.exists());
    }
}
