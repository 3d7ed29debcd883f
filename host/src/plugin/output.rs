//! Captured stdout/stderr of a plugin: kept (up to a bound) so it can be
//! logged under the plugin's name and searched for a panic message. Writes
//! beyond the bound are dropped silently, never failed, because a failed
//! write makes Rust's `println!` panic inside the guest.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of output kept per stream and call.
const KEEP: usize = 16 * 1024;

/// One captured output stream; clones share the buffer.
#[derive(Clone, Default)]
pub(crate) struct Captured {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl Captured {
    fn append(&self, bytes: &[u8]) {
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        let room = KEEP.saturating_sub(buf.len());
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Everything captured so far, as text.
    pub(crate) fn text(&self) -> String {
        let buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl IsTerminal for Captured {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Captured {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Captured {
    async fn ready(&mut self) {}
}

impl OutputStream for Captured {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for Captured {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The panic message in a Rust guest's stderr (`panicked at FILE:LINE:COL:`
/// followed by the message), if there is one.
pub(crate) fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.find("panicked at ")?;
    let rest = &stderr[start + "panicked at ".len()..];
    let (location, message) = match rest.split_once(":\n") {
        Some((location, message)) => (location, message),
        None => (rest.lines().next().unwrap_or(rest), ""),
    };
    let message = message.lines().next().unwrap_or("").trim();
    Some(if message.is_empty() {
        format!("at {location}")
    } else {
        format!("{message} (at {location})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_message_names_message_and_location() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:9:9:\nno way\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(panic_message(stderr).unwrap(), "no way (at src/lib.rs:9:9)");
    }

    #[test]
    fn output_without_panic_has_no_message() {
        assert_eq!(panic_message("all fine\n"), None);
    }

    #[test]
    fn capture_is_bounded_and_never_fails() {
        let mut c = Captured::default();
        for _ in 0..100 {
            OutputStream::write(&mut c, bytes::Bytes::from(vec![b'x'; 1024])).unwrap();
        }
        assert_eq!(c.text().len(), KEEP);
    }
}
