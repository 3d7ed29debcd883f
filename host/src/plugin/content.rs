//! The `content` resource: a file's bytes streamed into a plugin.

use std::io::Read;

/// The host caps one `content.read` at this many bytes.
pub const MAX_READ: usize = 1024 * 1024;

/// A sequential byte source offered to a plugin as its `content`.
pub trait ContentSource: Send {
    /// Read up to `max` bytes; an empty vector means the end.
    fn read_chunk(&mut self, max: usize) -> std::io::Result<Vec<u8>>;
    /// Total size in bytes.
    fn size(&self) -> u64;
}

/// A [`ContentSource`] over any reader of known size.
pub struct ReadContent<R> {
    reader: R,
    size: u64,
}

impl<R: Read + Send> ReadContent<R> {
    /// Stream `size` bytes from `reader`.
    pub fn new(reader: R, size: u64) -> Self {
        ReadContent { reader, size }
    }
}

impl ReadContent<std::fs::File> {
    /// Stream a local file.
    pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        Ok(ReadContent::new(file, size))
    }
}

impl<R: Read + Send> ContentSource for ReadContent<R> {
    fn read_chunk(&mut self, max: usize) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; max.min(MAX_READ)];
        let mut filled = 0;
        // Fill the buffer unless the source ends, so the plugin gets few large
        // chunks rather than many small ones.
        while filled < buf.len() {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }

    fn size(&self) -> u64 {
        self.size
    }
}

/// The host side of one `content` resource handed to a plugin.
pub struct ContentHandle {
    pub(crate) source: Box<dyn ContentSource>,
}
