//! What a command printed, as deft keeps it: redacted, valid UTF-8, and capped, keeping the
//! head and the tail with a marker that says how much was cut.

use deft_core::StreamRedactor;
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// Collects a command's output under a cap.
#[derive(Debug)]
pub struct CappedOutput {
    cap: usize,
    head: Vec<u8>,
    /// The last bytes seen once the head is full, as a ring kept short.
    tail: Vec<u8>,
    total: u64,
}

impl CappedOutput {
    pub fn new(cap: usize) -> CappedOutput {
        CappedOutput {
            cap,
            head: Vec::new(),
            tail: Vec::new(),
            total: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let head_room = (self.cap / 2).saturating_sub(self.head.len());
        let (to_head, rest) = bytes.split_at(head_room.min(bytes.len()));
        self.head.extend_from_slice(to_head);
        self.tail.extend_from_slice(rest);
        let keep = self.cap - self.cap / 2;
        if self.tail.len() > keep * 2 {
            self.tail.drain(..self.tail.len() - keep);
        }
    }

    /// The kept text, and whether anything was cut.
    pub fn finish(mut self) -> (String, bool) {
        let keep = self.cap - self.cap / 2;
        if self.tail.len() > keep {
            self.tail.drain(..self.tail.len() - keep);
        }
        let kept = (self.head.len() + self.tail.len()) as u64;
        if kept >= self.total {
            self.head.extend_from_slice(&self.tail);
            return (String::from_utf8_lossy(&self.head).into_owned(), false);
        }
        let cut = self.total - kept;
        let text = format!(
            "{}\n[… {cut} bytes of output cut …]\n{}",
            String::from_utf8_lossy(&self.head),
            String::from_utf8_lossy(&self.tail)
        );
        (text, true)
    }
}

/// Turns raw output pieces into redacted text pieces, never splitting a UTF-8 character.
#[derive(Debug)]
pub struct OutputText<'a> {
    redactor: StreamRedactor<'a>,
    partial: Vec<u8>,
}

impl<'a> OutputText<'a> {
    pub fn new(redactor: StreamRedactor<'a>) -> OutputText<'a> {
        OutputText {
            redactor,
            partial: Vec::new(),
        }
    }

    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut redacted = std::mem::take(&mut self.partial);
        redacted.extend(self.redactor.push(bytes));
        let complete = complete_utf8_prefix(&redacted);
        self.partial = redacted.split_off(complete);
        redacted
    }

    pub fn finish(self) -> Vec<u8> {
        let mut rest = self.partial;
        rest.extend(self.redactor.finish());
        rest
    }
}

/// Where a process's stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// Into the output, as it arrives.
    Output,
    /// Aside, returned at the end (the sandbox's own diagnostics).
    Aside,
}

/// Reads a process's stdout and stderr to their ends: output redacted, kept under the cap and
/// passed on piece by piece. Returns what stderr said when it is kept aside.
pub async fn read_streams(
    mut stdout: impl AsyncRead + Unpin,
    mut stderr: impl AsyncRead + Unpin,
    stderr_to: Stderr,
    text: &mut OutputText<'_>,
    kept: &mut CappedOutput,
    on_output: &mut (dyn FnMut(&str) + Send),
) -> Vec<u8> {
    let mut aside = Vec::new();
    let (mut out_buf, mut err_buf) = (vec![0u8; 16 * 1024], vec![0u8; 4 * 1024]);
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        let (from_stdout, read) = tokio::select! {
            read = stdout.read(&mut out_buf), if out_open => (true, read),
            read = stderr.read(&mut err_buf), if err_open => (false, read),
        };
        let n = match read {
            Ok(0) | Err(_) => {
                if from_stdout {
                    out_open = false
                } else {
                    err_open = false
                }
                continue;
            }
            Ok(n) => n,
        };
        let bytes = if from_stdout {
            &out_buf[..n]
        } else {
            &err_buf[..n]
        };
        if !from_stdout && stderr_to == Stderr::Aside {
            aside.extend_from_slice(bytes);
            continue;
        }
        let clean = text.push(bytes);
        kept.push(&clean);
        on_output(&String::from_utf8_lossy(&clean));
    }
    aside
}

/// The length of the longest prefix that does not end inside a UTF-8 character.
fn complete_utf8_prefix(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(error) if error.error_len().is_none() => error.valid_up_to(),
        Err(_) => bytes.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_output_keeps_head_and_tail() {
        let mut output = CappedOutput::new(20);
        for chunk in ["0123456789", "abcdefghij", "ABCDEFGHIJ", "klmnopqrst"] {
            output.push(chunk.as_bytes());
        }
        let (text, cut) = output.finish();
        assert!(cut);
        assert_eq!(text, "0123456789\n[… 20 bytes of output cut …]\nklmnopqrst");
        let mut short = CappedOutput::new(20);
        short.push(b"hello");
        assert_eq!(short.finish(), ("hello".to_owned(), false));
    }

    #[test]
    fn characters_are_never_split() {
        let redactor = deft_core::Redactor::default();
        let mut text = OutputText::new(redactor.stream());
        let bytes = "héllo".as_bytes();
        let first = text.push(&bytes[..2]);
        assert_eq!(first, b"h");
        let mut all = first;
        all.extend(text.push(&bytes[2..]));
        all.extend(text.finish());
        assert_eq!(String::from_utf8(all).unwrap(), "héllo");
    }
}
