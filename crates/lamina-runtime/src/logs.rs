//! Function logs: each instance writes one log stream (`YYYY/MM/DD/[VERSION]<id>`) in its
//! function's log group (`/aws/lambda/NAME`). A line goes into its stream's own buffer; one
//! writer thread appends the buffers to their files every few milliseconds (sooner when one
//! fills up), so an invocation neither waits on the disk nor wakes a thread per line, and no
//! lock is shared between instances. An invocation that asked for `Tail` captures its own lines.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::Duration;

/// The most of one invocation's log kept for `X-Amz-Log-Result`.
pub const TAIL_BYTES: usize = 4096;
/// How often buffered lines reach their files.
const FLUSH_EVERY: Duration = Duration::from_millis(10);
/// A buffer this full wakes the writer at once.
const HIGH_WATER: usize = 64 * 1024;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Lines of one stream not yet written.
#[derive(Debug)]
struct Buffer {
    path: PathBuf,
    pending: Mutex<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Every stream with a buffer; a stream whose `LogStream`s are all gone leaves once its
    /// buffer is written.
    streams: Mutex<Vec<Arc<Buffer>>>,
    /// Open files by path (held while writing, so flushes never interleave).
    files: Mutex<HashMap<PathBuf, File>>,
}

impl Shared {
    /// Writes every buffered line to its file.
    fn flush(&self) {
        let streams: Vec<Arc<Buffer>> = lock(&self.streams).clone();
        let mut files = lock(&self.files);
        for buffer in &streams {
            let bytes = std::mem::take(&mut *lock(&buffer.pending));
            if bytes.is_empty() {
                continue;
            }
            if !files.contains_key(&buffer.path) {
                if files.len() > 256 {
                    files.clear();
                }
                if let Some(parent) = buffer.path.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                match OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&buffer.path)
                {
                    Ok(file) => {
                        files.insert(buffer.path.clone(), file);
                    }
                    Err(err) => {
                        tracing::warn!(%err, path = %buffer.path.display(), "cannot open log stream");
                        continue;
                    }
                }
            }
            if let Some(file) = files.get_mut(&buffer.path) {
                let _ = file.write_all(&bytes);
            }
        }
        // Streams nobody writes to any more (only this list and `streams` above hold them).
        lock(&self.streams).retain(|buffer| {
            let orphan = Arc::strong_count(buffer) <= 2 && lock(&buffer.pending).is_empty();
            if orphan {
                files.remove(&buffer.path);
            }
            !orphan
        });
    }
}

/// Where log streams are made, and the writer behind them.
#[derive(Clone, Debug)]
pub struct LogSink {
    shared: Arc<Shared>,
    writer: Thread,
    root: PathBuf,
}

impl LogSink {
    /// Starts the writer for logs under `root`.
    pub fn start(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let shared = Arc::new(Shared::default());
        let writing = Arc::downgrade(&shared);
        let writer = std::thread::Builder::new()
            .name("lamina-logs".into())
            .spawn(move || {
                loop {
                    std::thread::park_timeout(FLUSH_EVERY);
                    match writing.upgrade() {
                        Some(shared) => shared.flush(),
                        None => return,
                    }
                }
            })?;
        Ok(Self {
            shared,
            writer: writer.thread().clone(),
            root: root.to_owned(),
        })
    }

    /// Writes everything buffered now (at shutdown, so nothing is left in memory).
    pub fn flush(&self) {
        self.shared.flush();
    }

    /// Deletes log streams last written more than `age` ago, and log groups left empty.
    /// Returns how many streams went.
    pub fn remove_older_than(&self, age: Duration) -> std::io::Result<usize> {
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
        let buffer = Arc::new(Buffer {
            path: self.root.join(group_dir).join(file),
            pending: Mutex::default(),
        });
        lock(&self.shared.streams).push(buffer.clone());
        LogStream {
            buffer,
            writer: self.writer.clone(),
            name: stream.to_owned(),
            capture: Arc::new(Mutex::new(None)),
        }
    }
}

/// One instance's log stream.
#[derive(Clone, Debug)]
pub struct LogStream {
    buffer: Arc<Buffer>,
    writer: Thread,
    pub name: String,
    capture: Arc<Mutex<Option<Vec<u8>>>>,
}

impl LogStream {
    /// The file the stream is written to.
    pub fn path(&self) -> &Path {
        &self.buffer.path
    }

    /// Appends one line (a newline is added).
    pub fn line(&self, line: &str) {
        if let Some(buffer) = lock(&self.capture).as_mut() {
            buffer.extend_from_slice(line.as_bytes());
            buffer.push(b'\n');
            if buffer.len() > 4 * TAIL_BYTES {
                buffer.drain(..buffer.len() - TAIL_BYTES);
            }
        }
        let full = {
            let mut pending = lock(&self.buffer.pending);
            pending.extend_from_slice(line.as_bytes());
            pending.push(b'\n');
            pending.len() > HIGH_WATER
        };
        if full {
            self.writer.unpark();
        }
    }

    /// Starts keeping this invocation's lines for `Tail`.
    pub fn begin_capture(&self) {
        *lock(&self.capture) = Some(Vec::new());
    }

    /// The last [`TAIL_BYTES`] captured since [`begin_capture`](Self::begin_capture).
    pub fn end_capture(&self) -> Vec<u8> {
        let mut captured = lock(&self.capture).take().unwrap_or_default();
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
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !(old.path().exists() && new.path().exists()) && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(3 * 86_400);
        File::options()
            .write(true)
            .open(old.path())
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let removed = sink.remove_older_than(Duration::from_secs(86_400)).unwrap();
        assert_eq!(removed, 1);
        assert!(!old.path().exists() && !old.path().parent().unwrap().exists());
        assert!(new.path().exists());
    }
}
