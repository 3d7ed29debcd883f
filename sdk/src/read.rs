//! Streaming readers over a file's [`Content`]: bytes, lines and CSV
//! records, without holding the file in memory.
//!
//! Every helper takes any [`std::io::Read`], so rules can be unit-tested
//! natively on byte slices and run on [`Content::reader`] in the plugin.
//!
//! ```
//! use wharf_sdk::read;
//!
//! let data = "invoice,amount\nA-1,10.50\nA-2,3.00\n".as_bytes();
//! let mut rows = read::csv(data);
//! read::require_header(&mut rows, &["invoice", "amount"]).unwrap();
//! assert_eq!(rows.records().count(), 2);
//! ```

use std::io::{self, BufRead, BufReader, Read};

use crate::{Content, HostError, Rejection};

pub use ::csv::{Reader as CsvReader, StringRecord};

/// Bytes asked of the host per read: large enough to amortise the call,
/// small enough to stay far below the plugin's memory cap.
const CHUNK: u32 = 64 * 1024;

impl Content {
    /// A [`Read`] over this content, for use with any streaming parser.
    pub fn reader(&self) -> ContentReader<'_> {
        ContentReader {
            content: self,
            pending: Vec::new(),
            offset: 0,
            done: false,
        }
    }
}

/// A [`Read`] over a [`Content`]; see [`Content::reader`].
pub struct ContentReader<'a> {
    content: &'a Content,
    pending: Vec<u8>,
    offset: usize,
    done: bool,
}

impl Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.offset == self.pending.len() {
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            self.pending = self.content.read(CHUNK).map_err(host_error_to_io)?;
            self.offset = 0;
            if self.pending.is_empty() {
                self.done = true;
                return Ok(0);
            }
        }
        let n = buf.len().min(self.pending.len() - self.offset);
        buf[..n].copy_from_slice(&self.pending[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

fn host_error_to_io(error: HostError) -> io::Error {
    let message = match error {
        HostError::NotFound(m) => format!("not found: {m}"),
        HostError::Denied(m) => format!("denied: {m}"),
        HostError::Unavailable(m) => format!("unavailable: {m}"),
        HostError::Invalid(m) => format!("invalid: {m}"),
    };
    io::Error::other(message)
}

/// The longest line [`lines`] accepts: a partner file without line breaks
/// must fail as a bad file, not exhaust the plugin's memory.
pub const MAX_LINE: usize = 1024 * 1024;

/// The lines of a text stream, without their line endings (`\n` or `\r\n`).
/// Invalid UTF-8, or a line longer than [`MAX_LINE`] bytes, yields an error
/// for that line and ends the iteration.
///
/// ```
/// let lines: Vec<String> = wharf_sdk::read::lines("a\r\nb\n".as_bytes())
///     .collect::<Result<_, _>>()
///     .unwrap();
/// assert_eq!(lines, ["a", "b"]);
/// ```
pub fn lines<R: Read>(reader: R) -> Lines<R> {
    lines_with_limit(reader, MAX_LINE)
}

/// [`lines`] with another line-length limit.
pub fn lines_with_limit<R: Read>(reader: R, max_line: usize) -> Lines<R> {
    Lines {
        reader: BufReader::new(reader),
        max_line,
        done: false,
    }
}

/// Iterator returned by [`lines`].
pub struct Lines<R> {
    reader: BufReader<R>,
    max_line: usize,
    done: bool,
}

impl<R: Read> Iterator for Lines<R> {
    type Item = io::Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut line = Vec::new();
        // One byte more than the limit tells a too-long line from one that fits.
        let limit = self.max_line as u64 + 2;
        let read = (&mut self.reader).take(limit).read_until(b'\n', &mut line);
        match read {
            Ok(0) => {
                self.done = true;
                None
            }
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                if line.len() > self.max_line {
                    self.done = true;
                    return Some(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a line is longer than {} bytes", self.max_line),
                    )));
                }
                Some(
                    String::from_utf8(line)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.utf8_error())),
                )
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// A CSV reader (comma-separated, first row is the header, every row must
/// have as many fields as the header).
pub fn csv<R: Read>(reader: R) -> CsvReader<R> {
    ::csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(reader)
}

/// A CSV reader with another delimiter, e.g. `b';'`.
pub fn csv_with_delimiter<R: Read>(reader: R, delimiter: u8) -> CsvReader<R> {
    ::csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .delimiter(delimiter)
        .from_reader(reader)
}

/// Check that the CSV header holds exactly `expected` (in order, trimmed,
/// case-insensitive). The rejection names the first difference.
///
/// ```
/// let mut rows = wharf_sdk::read::csv("id;x\n".as_bytes());
/// let err = wharf_sdk::read::require_header(&mut rows, &["id", "amount"]).unwrap_err();
/// assert_eq!(err.code, "bad-header");
/// ```
pub fn require_header<R: Read>(
    reader: &mut CsvReader<R>,
    expected: &[&str],
) -> Result<(), Rejection> {
    let header = reader.headers().map_err(|e| {
        Rejection::new("unreadable-csv", "the CSV header cannot be read").detail("error", e)
    })?;
    let found: Vec<&str> = header.iter().map(str::trim).collect();
    let matches = found.len() == expected.len()
        && found
            .iter()
            .zip(expected)
            .all(|(f, e)| f.eq_ignore_ascii_case(e));
    if matches {
        Ok(())
    } else {
        Err(
            Rejection::new("bad-header", "the CSV header is not the expected one")
                .detail("expected", expected.join(","))
                .detail("found", found.join(",")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_past_the_limit_is_an_error_not_a_memory_blow_up() {
        let mut it = lines_with_limit("short\n0123456789abcdef\nnext\n".as_bytes(), 10);
        assert_eq!(it.next().unwrap().unwrap(), "short");
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
        let exact: Vec<String> = lines_with_limit("0123456789\r\n".as_bytes(), 10)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(exact, ["0123456789"]);
    }

    #[test]
    fn header_check_is_case_and_space_insensitive() {
        let mut rows = csv(" ID , Amount\n1,2\n".as_bytes());
        assert!(require_header(&mut rows, &["id", "amount"]).is_ok());
    }

    #[test]
    fn ragged_row_is_an_error() {
        let mut rows = csv("a,b\n1,2\n3\n".as_bytes());
        let results: Vec<_> = rows.records().collect();
        assert!(results[0].is_ok());
        assert!(results[1].is_err());
    }

    #[test]
    fn semicolon_files_are_read_with_their_delimiter() {
        let mut rows = csv_with_delimiter("a;b\n1;2\n".as_bytes(), b';');
        assert!(require_header(&mut rows, &["a", "b"]).is_ok());
        assert_eq!(rows.records().next().unwrap().unwrap().get(1), Some("2"));
    }
}
