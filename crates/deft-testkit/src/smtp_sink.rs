//! An SMTP server on loopback that accepts every message and keeps it, for tests of e-mail.
//!
//! Written from RFC 5321 without any mail crate: the greeting (220), `EHLO`/`HELO` (250, the
//! EHLO reply listing `8BITMIME`, `SMTPUTF8` and `PIPELINING`), `MAIL FROM`, `RCPT TO` (each
//! 250, `RCPT` before `MAIL` is 503), `DATA` (354, then lines up to a lone `.`, with
//! dot-stuffing undone), `RSET`, `NOOP`, `QUIT` (221); anything else is 502. It offers no
//! STARTTLS and no AUTH, so a client must be set to send in the clear; a command out of order
//! lands in [`SmtpSink::violations`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One message as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The envelope's sender (`MAIL FROM`), without the angle brackets.
    pub from: String,
    /// The envelope's recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The message: headers, a blank line, the body; lines end in CRLF.
    pub data: String,
}

impl Mail {
    /// The value of header `name` (case aside), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(value) = value.as_mut() {
                    value.push_str(line.trim_start_matches(['\r', '\n']));
                }
                continue;
            }
            if value.is_some() {
                break;
            }
            if let Some((key, rest)) = line.split_once(':')
                && key.eq_ignore_ascii_case(name)
            {
                value = Some(rest.trim().to_owned());
            }
        }
        value
    }

    /// The body after the headers, as sent.
    pub fn body(&self) -> &str {
        self.data
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
    }

    /// The body as a reader sees it: quoted-printable (RFC 2045 §6.7) decoded when the
    /// message says it is encoded so.
    pub fn text(&self) -> String {
        let encoding = self.header("Content-Transfer-Encoding").unwrap_or_default();
        if !encoding.eq_ignore_ascii_case("quoted-printable") {
            return self.body().to_owned();
        }
        let joined = self.body().replace("=\r\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut at = 0;
        while at < bytes.len() {
            let hex = bytes
                .get(at + 1..at + 3)
                .and_then(|pair| std::str::from_utf8(pair).ok())
                .and_then(|pair| u8::from_str_radix(pair, 16).ok());
            match (bytes[at], hex) {
                (b'=', Some(byte)) => {
                    out.push(byte);
                    at += 3;
                }
                (byte, _) => {
                    out.push(byte);
                    at += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[derive(Default)]
struct Kept {
    mails: Vec<Mail>,
    violations: Vec<String>,
}

/// A running sink; it stops when dropped.
pub struct SmtpSink {
    pub address: SocketAddr,
    kept: Arc<Mutex<Kept>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for SmtpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSink")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpSink {
    /// Starts a sink on a free port of 127.0.0.1.
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port is free");
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let kept = Arc::new(Mutex::new(Kept::default()));
        let shared = kept.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = shared.clone();
                tokio::spawn(async move {
                    let _ = session(stream, kept).await;
                });
            }
        });
        SmtpSink {
            address,
            kept,
            task,
        }
    }

    /// The messages received so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.kept
            .lock()
            .expect("no panic while the sink's lock is held")
            .mails
            .clone()
    }

    /// Commands that broke the protocol's order.
    pub fn violations(&self) -> Vec<String> {
        self.kept
            .lock()
            .expect("no panic while the sink's lock is held")
            .violations
            .clone()
    }

    /// Waits up to `timeout` for `count` messages and returns them.
    pub async fn wait_for(&self, count: usize, timeout: std::time::Duration) -> Vec<Mail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mails = self.mails();
            if mails.len() >= count || tokio::time::Instant::now() >= deadline {
                return mails;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// The longest line accepted (RFC 5321 §4.5.3.1.6 allows 1000 octets with CRLF; we are lenient).
const LINE_MAX: usize = 64 * 1024;

async fn session(stream: TcpStream, kept: Arc<Mutex<Kept>>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write
        .write_all(b"220 sink.deft.test ESMTP deft test sink\r\n")
        .await?;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    let violation = |text: String| {
        kept.lock()
            .expect("no panic while the sink's lock is held")
            .violations
            .push(text);
    };
    loop {
        let mut line = String::new();
        if lines.read_line(&mut line).await? == 0 || line.len() > LINE_MAX {
            return Ok(());
        }
        let command = line.trim_end_matches(['\r', '\n']);
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-sink.deft.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 PIPELINING\r\n",
            "HELO" => b"250 sink.deft.test\r\n",
            "MAIL" => {
                from = Some(path_of(command));
                to.clear();
                b"250 OK\r\n"
            }
            "RCPT" if from.is_none() => {
                violation(format!("RCPT before MAIL: {command}"));
                b"503 MAIL first\r\n"
            }
            "RCPT" => {
                to.push(path_of(command));
                b"250 OK\r\n"
            }
            "DATA" if to.is_empty() => {
                violation("DATA without a recipient".into());
                b"503 RCPT first\r\n"
            }
            "DATA" => {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let data = read_data(&mut lines).await?;
                kept.lock()
                    .expect("no panic while the sink's lock is held")
                    .mails
                    .push(Mail {
                        from: from.take().unwrap_or_default(),
                        to: std::mem::take(&mut to),
                        data,
                    });
                b"250 OK: queued\r\n"
            }
            "RSET" => {
                from = None;
                to.clear();
                b"250 OK\r\n"
            }
            "NOOP" => b"250 OK\r\n",
            "QUIT" => {
                write.write_all(b"221 Bye\r\n").await?;
                return Ok(());
            }
            _ => {
                violation(format!("unknown command: {command}"));
                b"502 Command not implemented\r\n"
            }
        };
        write.write_all(reply).await?;
    }
}

/// The address between `<` and `>` in `MAIL FROM:<a@b>` or `RCPT TO:<a@b>`.
fn path_of(command: &str) -> String {
    let start = command.find('<').map_or(0, |at| at + 1);
    let end = command[start..]
        .find('>')
        .map_or(command.len(), |at| start + at);
    command[start..end].to_owned()
}

/// The message up to a line holding only `.`, with one leading dot removed from every line
/// that starts with one (RFC 5321 §4.5.2).
async fn read_data<R: tokio::io::AsyncBufRead + Unpin>(lines: &mut R) -> std::io::Result<String> {
    let mut data = String::new();
    loop {
        let mut line = String::new();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(data);
        }
        if line == ".\r\n" || line == ".\n" {
            return Ok(data);
        }
        let line = line.strip_prefix('.').unwrap_or(&line);
        data.push_str(line);
    }
}
