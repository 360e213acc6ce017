//! Helpers shared by the crate's unit tests.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

/// A path in the temp directory nobody else uses: `create` is retried with
/// a new suffix until it succeeds.
fn unique_path<T>(
    kind: &str,
    mut create: impl FnMut(&PathBuf) -> std::io::Result<T>,
) -> (PathBuf, T) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    for n in 0..10_000u32 {
        let path = std::env::temp_dir().join(format!(
            "vessel-arch-{kind}-{}-{thread}-{nanos}-{n}",
            std::process::id()
        ));
        if let Ok(v) = create(&path) {
            return (path, v);
        }
    }
    panic!("cannot create a temp {kind}");
}

/// A file in the system temp directory, removed on drop.
pub struct TempFile {
    path: PathBuf,
}

impl TempFile {
    pub fn with_contents(bytes: &[u8]) -> Self {
        let (path, mut f) = unique_path("file", |p| {
            File::options().write(true).create_new(true).open(p)
        });
        // Test setup: the temp directory is writable.
        f.write_all(bytes).expect("write temp file");
        TempFile { path }
    }

    pub fn open(&self) -> File {
        File::open(&self.path).expect("open temp file")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A fresh directory in the system temp directory, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new() -> Self {
        let (path, ()) = unique_path("dir", |p| std::fs::create_dir(p));
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
