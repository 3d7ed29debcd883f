//! FTP, explicit FTPS (`AUTH TLS`) and implicit FTPS through suppaftp (tokio + rustls).

mod tls;

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::future::BoxFuture;
use suppaftp::list::ListParser;
use suppaftp::tokio::TransferStream;
use suppaftp::tokio::{
    AsyncRustlsConnector, AsyncRustlsFtpStream, AsyncRustlsStream, ImplAsyncFtpStream,
};
use suppaftp::types::FileType;
use suppaftp::{FtpError, Mode, Status};
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

use crate::config::{CommonConfig, Secret, SecretSource};
use crate::error::{Error, Result};
use crate::io::{CopyError, Progress, StallReader, copy_bounded};
use crate::pool::{Pool, Pooled};
use crate::retry::with_retry;
use crate::{Endpoint, Entry, EntryKind, ReadStream, RemotePath};

/// How the FTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FtpSecurity {
    /// No TLS (only for partners that offer nothing else).
    Plain,
    /// `AUTH TLS` on the normal port, then protected data connections (`PROT P`).
    Explicit,
    /// TLS from the first byte (usually port 990).
    Implicit,
}

/// How the server's TLS certificate is verified. Verification is always on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file of the CA(s) to trust instead of the public web roots.
    pub ca_file: Option<PathBuf>,
    /// SHA-256 of the server's certificate (hex, colons allowed): trust exactly this
    /// certificate instead of a CA chain; the certificate's signatures are still checked.
    pub pinned_sha256: Option<String>,
    /// Name to verify the certificate against, when it differs from `host`.
    pub server_name: Option<String>,
}

/// One FTP partner.
#[derive(Debug, Clone)]
pub struct FtpConfig {
    /// Host name or IP address.
    pub host: String,
    /// Control port (21, or 990 for implicit FTPS).
    pub port: u16,
    /// Login name.
    pub user: String,
    /// Where the password comes from.
    pub password: SecretSource,
    /// The partner root on the server (absolute, e.g. `/` or `/outbound`).
    pub root: String,
    /// Plain, explicit or implicit TLS.
    pub security: FtpSecurity,
    /// Certificate verification settings.
    pub tls: TlsSettings,
    /// Use `EPSV` (the passive address is then always the control connection's host).
    pub epsv: bool,
    /// With `PASV`, always connect to the control connection's address instead of the one
    /// the server announces: servers behind NAT announce private addresses, and a hostile
    /// server could otherwise point data connections at a third host.
    pub nat_workaround: bool,
    /// The server's UTC offset in minutes: `LIST` timestamps carry no time zone.
    pub server_utc_offset_minutes: i32,
    /// Use `SIZE` and `MDTM` when FEAT offers them (turn off for servers that answer them
    /// wrongly; sizes then come from listings).
    pub use_size_mdtm: bool,
    /// Pool, timeouts, retries, temporary names.
    pub common: CommonConfig,
}

impl FtpConfig {
    /// Defaults for `host:port` with explicit FTPS, EPSV and the root `/`.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        password: SecretSource,
    ) -> Self {
        Self {
            host: host.into(),
            port,
            user: user.into(),
            password,
            root: "/".into(),
            security: FtpSecurity::Explicit,
            tls: TlsSettings::default(),
            epsv: true,
            nat_workaround: true,
            server_utc_offset_minutes: 0,
            use_size_mdtm: true,
            common: CommonConfig::default(),
        }
    }
}

/// One logged-in control connection and what its server supports.
pub struct FtpConn {
    ftp: AsyncRustlsFtpStream,
    mlsd: bool,
    mdtm: bool,
    size: bool,
}

/// An FTP or FTPS partner.
pub struct FtpEndpoint {
    cfg: FtpConfig,
    password: Secret,
    tls: Option<tokio_rustls::TlsConnector>,
    pool: Pool<FtpConn>,
}

fn map_ftp(e: FtpError) -> Error {
    match e {
        FtpError::ConnectionError(io) => Error::Connection(io),
        FtpError::SecureError(s) => Error::Tls {
            host: String::new(),
            detail: s,
        },
        FtpError::UnexpectedResponse(r) => {
            let code = r.status.code();
            let text = String::from_utf8_lossy(&r.body).trim().to_owned();
            match code {
                421 => Error::Busy(text),
                530 => Error::Auth {
                    user: String::new(),
                    detail: text,
                },
                400..=499 => Error::Protocol(text),
                _ => Error::Refused(text),
            }
        }
        other => Error::Protocol(other.to_string()),
    }
}

/// How long an upload runs before a second connection is opened for its size check and rename
/// (when the pool has room and none is idle): long enough that small files never cost one.
const SPARE_AFTER: Duration = Duration::from_millis(200);

/// Waits for a control-connection command at most `stall`: a server that stops answering
/// fails the operation (and its connection) instead of hanging it.
async fn within<T>(
    stall: Duration,
    fut: impl std::future::Future<Output = suppaftp::FtpResult<T>>,
) -> Result<T> {
    match tokio::time::timeout(stall, fut).await {
        Ok(r) => r.map_err(map_ftp),
        Err(_) => Err(Error::Timeout {
            what: "FTP server reply",
            after: stall,
        }),
    }
}

impl FtpEndpoint {
    /// Builds the endpoint: reads the password and loads the TLS trust settings now, so a bad
    /// configuration fails at start-up. No connection is opened until the first operation.
    pub fn new(cfg: FtpConfig) -> Result<Self> {
        let password = cfg.password.resolve()?;
        let tls = match cfg.security {
            FtpSecurity::Plain => None,
            _ => Some(tls::connector(&cfg.tls)?),
        };
        let pool = Pool::new(cfg.common.max_connections, cfg.common.connect_timeout);
        Ok(Self {
            cfg,
            password,
            tls,
            pool,
        })
    }

    /// The configuration this endpoint runs with.
    pub fn config(&self) -> &FtpConfig {
        &self.cfg
    }

    /// How many connects the server refused as busy so far (a sign `max_connections`
    /// exceeds the partner's per-IP cap).
    pub fn busy_refusals(&self) -> u64 {
        self.pool.busy_refusals()
    }

    fn abs(&self, p: &RemotePath) -> String {
        p.under(&self.cfg.root)
    }

    fn server_name(&self) -> &str {
        self.cfg
            .tls
            .server_name
            .as_deref()
            .unwrap_or(&self.cfg.host)
    }

    fn tls_error(&self, e: Error) -> Error {
        match e {
            Error::Tls { detail, .. } => Error::Tls {
                host: format!("{}:{}", self.cfg.host, self.cfg.port),
                detail,
            },
            Error::Auth { detail, .. } => Error::Auth {
                user: self.cfg.user.clone(),
                detail,
            },
            other => other,
        }
    }

    async fn connect(&self) -> Result<FtpConn> {
        let addr = (self.cfg.host.as_str(), self.cfg.port);
        let connector = || AsyncRustlsConnector::from(self.tls.clone().expect("TLS configured"));
        let mut ftp = match self.cfg.security {
            FtpSecurity::Implicit => {
                AsyncRustlsFtpStream::connect_secure_implicit(addr, connector(), self.server_name())
                    .await
                    .map_err(map_ftp)?
            }
            security => {
                let tcp = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(Error::Connection)?;
                let _ = tcp.set_nodelay(true);
                let ftp = ImplAsyncFtpStream::connect_with_stream(tcp)
                    .await
                    .map_err(map_ftp)?;
                if security == FtpSecurity::Explicit {
                    ftp.into_secure(connector(), self.server_name())
                        .await
                        .map_err(map_ftp)?
                } else {
                    ftp
                }
            }
        };
        ftp.set_mode(if self.cfg.epsv {
            Mode::ExtendedPassive
        } else {
            Mode::Passive
        });
        ftp.set_passive_nat_workaround(self.cfg.nat_workaround);
        ftp.login(self.cfg.user.as_str(), self.password.expose())
            .await
            .map_err(map_ftp)?;
        if self.cfg.security == FtpSecurity::Implicit {
            // suppaftp negotiates data protection only for explicit FTPS: ask for private
            // (TLS) data connections ourselves.
            ftp.custom_command("PBSZ 0", &[Status::CommandOk])
                .await
                .map_err(map_ftp)?;
            ftp.custom_command("PROT P", &[Status::CommandOk])
                .await
                .map_err(map_ftp)?;
        }
        ftp.transfer_type(FileType::Binary).await.map_err(map_ftp)?;
        // FEAT is optional (RFC 2389); a server without it supports none of the extensions.
        let feat = ftp.feat().await.unwrap_or_default();
        let has = |k: &str| feat.keys().any(|f| f.eq_ignore_ascii_case(k));
        Ok(FtpConn {
            mlsd: has("MLST"),
            mdtm: has("MDTM") && self.cfg.use_size_mdtm,
            size: has("SIZE") && self.cfg.use_size_mdtm,
            ftp,
        })
    }

    async fn conn(&self) -> Result<Pooled<FtpConn>> {
        self.pool.get(|| self.connect_named()).await
    }

    /// [`Self::connect`], with a TLS failure naming this server.
    async fn connect_named(&self) -> Result<FtpConn> {
        self.connect().await.map_err(|e| self.tls_error(e))
    }

    async fn list_once(&self, dir: &RemotePath) -> Result<Vec<Entry>> {
        let abs = self.abs(dir);
        let mut c = self.conn().await?;
        let (lines, mlsd) = if c.mlsd {
            let r = within(
                self.cfg.common.stall_timeout,
                c.begin().ftp.mlsd(Some(&abs)),
            )
            .await;
            (c.check(r)?, true)
        } else {
            // CWD then a bare LIST: a path argument would be globbed or taken for options.
            let r = within(self.cfg.common.stall_timeout, c.begin().ftp.cwd(&abs)).await;
            c.check(r)?;
            let r = within(self.cfg.common.stall_timeout, c.begin().ftp.list(None)).await;
            (c.check(r)?, false)
        };
        drop(c);
        Ok(parse_listing(
            dir,
            &lines,
            mlsd,
            self.cfg.server_utc_offset_minutes,
        ))
    }

    async fn stat_once(&self, path: &RemotePath) -> Result<Option<Entry>> {
        let name = path.file_name().unwrap_or("").to_owned();
        let abs = self.abs(path);
        let mut c = self.conn().await?;
        if path.is_root() {
            return Ok(Some(Entry {
                name,
                path: path.clone(),
                size: 0,
                mtime: None,
                kind: EntryKind::Dir,
            }));
        }
        if c.size {
            let r = within(self.cfg.common.stall_timeout, c.begin().ftp.size(&abs)).await;
            match c.check(r) {
                Ok(size) => {
                    let mtime = if c.mdtm {
                        let r =
                            within(self.cfg.common.stall_timeout, c.begin().ftp.mdtm(&abs)).await;
                        match c.check(r) {
                            Ok(t) => Some(SystemTime::from(t.and_utc())),
                            Err(Error::Refused(_)) => None,
                            Err(e) => return Err(e),
                        }
                    } else {
                        None
                    };
                    return Ok(Some(Entry {
                        name,
                        path: path.clone(),
                        size: size as u64,
                        mtime,
                        kind: EntryKind::File,
                    }));
                }
                Err(Error::Refused(_)) => {}
                Err(e) => return Err(e),
            }
            // Not a file: a directory if we can enter it.
            let r = within(self.cfg.common.stall_timeout, c.begin().ftp.cwd(&abs)).await;
            return match c.check(r) {
                Ok(()) => Ok(Some(Entry {
                    name,
                    path: path.clone(),
                    size: 0,
                    mtime: None,
                    kind: EntryKind::Dir,
                })),
                Err(Error::Refused(_)) => Ok(None),
                Err(e) => Err(e),
            };
        }
        drop(c);
        let parent = path.parent().unwrap_or_default();
        match self.list_once(&parent).await {
            Ok(entries) => Ok(entries.into_iter().find(|e| e.name == name)),
            // The folder cannot be entered: nothing is reachable at `path` either.
            Err(Error::Refused(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn open_once(&self, path: &RemotePath, offset: u64) -> Result<ReadStream> {
        let abs = self.abs(path);
        let mut c = self.conn().await?;
        if offset > 0 {
            let off = usize::try_from(offset)
                .map_err(|_| Error::Config("resume offset too large".into()))?;
            let r = within(
                self.cfg.common.stall_timeout,
                c.begin().ftp.resume_transfer(off),
            )
            .await;
            c.check(r)?;
        }
        let r = within(
            self.cfg.common.stall_timeout,
            c.begin().ftp.retr_as_stream(&abs),
        )
        .await;
        let stream = c.check(r)?;
        Ok(Box::new(FtpRead {
            state: ReadState::Streaming(StallReader::new(stream, self.cfg.common.stall_timeout)),
            conn: c,
        }))
    }

    /// The size of the uploaded file `tmp` (`tmp_abs` on the server) as `c` sees it: by
    /// `SIZE`, or from a listing of its folder where the server has no `SIZE`.
    async fn stored_size(
        &self,
        c: &mut Pooled<FtpConn>,
        tmp: &RemotePath,
        tmp_abs: &str,
    ) -> Result<u64> {
        let stall = self.cfg.common.stall_timeout;
        if c.size {
            let r = within(stall, c.begin().ftp.size(tmp_abs)).await;
            return Ok(c.check(r)? as u64);
        }
        let parent = tmp.parent().unwrap_or_default();
        let r = within(stall, c.begin().ftp.cwd(self.abs(&parent))).await;
        c.check(r)?;
        let r = within(stall, c.begin().ftp.list(None)).await;
        let lines = c.check(r)?;
        let name = tmp.file_name().unwrap_or_default();
        parse_listing(&parent, &lines, false, 0)
            .into_iter()
            .find(|e| e.name == name)
            .map(|e| e.size)
            .ok_or_else(|| Error::NotFound(tmp_abs.to_owned()))
    }

    /// Removes a temporary file after a failed upload, on a fresh connection; failures are
    /// only logged (the file is recognisable by its temporary name).
    async fn cleanup(&self, abs: &str) {
        let attempt = async {
            let mut c = self.conn().await?;
            let r = within(self.cfg.common.stall_timeout, c.begin().ftp.rm(abs)).await;
            c.check(r)
        };
        if let Ok(Err(e)) | Err(e) = tokio::time::timeout(self.cfg.common.connect_timeout, attempt)
            .await
            .map_err(|_| Error::Timeout {
                what: "cleanup",
                after: self.cfg.common.connect_timeout,
            })
        {
            tracing::warn!(file = %abs, error = %e, "could not remove a temporary upload");
        }
    }
}

/// Turns MLSD or LIST lines (Unix or DOS format) into entries of `dir`. LIST times carry no
/// time zone: they are read as UTC shifted by the server's offset. Unparsable lines and
/// unsafe names are skipped with a warning.
pub fn parse_listing(
    dir: &RemotePath,
    lines: &[String],
    mlsd: bool,
    utc_offset_minutes: i32,
) -> Vec<Entry> {
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        let line = line.as_str();
        let parsed = if mlsd {
            let facts = line.split(' ').next().unwrap_or("").to_ascii_lowercase();
            if facts.contains("type=cdir;") || facts.contains("type=pdir;") {
                continue;
            }
            ListParser::parse_mlsd(line)
        } else {
            ListParser::parse_posix(line).or_else(|_| ListParser::parse_dos(line))
        };
        let f = match parsed {
            Ok(f) => f,
            Err(e) => {
                if !line.starts_with("total ") {
                    tracing::warn!(%dir, %line, error = %e, "skipping an unparsable listing line");
                }
                continue;
            }
        };
        let name = f.name();
        if name == "." || name == ".." {
            continue;
        }
        let path = match dir.join(name) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%dir, error = %e, "skipping an unsafe remote name");
                continue;
            }
        };
        let kind = if f.is_directory() {
            EntryKind::Dir
        } else if f.is_symlink() {
            EntryKind::Symlink
        } else if f.is_file() {
            EntryKind::File
        } else {
            EntryKind::Other
        };
        let mtime = if mlsd {
            f.modified()
        } else {
            list_time(f.modified(), utc_offset_minutes)
        };
        out.push(Entry {
            name: name.to_owned(),
            path,
            size: f.size() as u64,
            mtime: Some(mtime),
            kind,
        });
    }
    out
}

fn list_time(t: SystemTime, offset_minutes: i32) -> SystemTime {
    let d = Duration::from_secs(u64::from(offset_minutes.unsigned_abs()) * 60);
    if offset_minutes >= 0 { t - d } else { t + d }
}

enum ReadState {
    Streaming(StallReader<TransferStream<AsyncRustlsStream>>),
    Finishing(BoxFuture<'static, suppaftp::FtpResult<()>>),
    Done,
}

/// A download: the data connection plus the control connection it belongs to. The control
/// connection returns to the pool only after the server confirmed the transfer (`226`).
struct FtpRead {
    state: ReadState,
    conn: Pooled<FtpConn>,
}

impl AsyncRead for FtpRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                ReadState::Streaming(s) => {
                    let before = buf.filled().len();
                    match Pin::new(&mut *s).poll_read(cx, buf) {
                        Poll::Ready(Ok(()))
                            if buf.filled().len() == before && buf.remaining() > 0 =>
                        {
                            let ReadState::Streaming(s) =
                                std::mem::replace(&mut this.state, ReadState::Done)
                            else {
                                unreachable!()
                            };
                            this.state = ReadState::Finishing(Box::pin(s.into_inner().finish()));
                        }
                        Poll::Ready(Err(e)) => {
                            this.conn.set_broken();
                            this.state = ReadState::Done;
                            return Poll::Ready(Err(e));
                        }
                        other => return other,
                    }
                }
                ReadState::Finishing(f) => {
                    let r = futures::ready!(f.as_mut().poll(cx));
                    this.state = ReadState::Done;
                    return Poll::Ready(r.map_err(|e| {
                        this.conn.set_broken();
                        map_ftp(e).into_io()
                    }));
                }
                ReadState::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl Drop for FtpRead {
    fn drop(&mut self) {
        // Dropped before the server confirmed the transfer: the control connection's state is
        // unknown, so it is closed rather than reused.
        if !matches!(self.state, ReadState::Done) {
            self.conn.set_broken();
        }
    }
}

#[async_trait]
impl Endpoint for FtpEndpoint {
    async fn list(&self, dir: &RemotePath) -> Result<Vec<Entry>> {
        with_retry(&self.cfg.common.retry, "ftp list", || self.list_once(dir)).await
    }

    async fn stat(&self, path: &RemotePath) -> Result<Option<Entry>> {
        with_retry(&self.cfg.common.retry, "ftp stat", || self.stat_once(path)).await
    }

    async fn is_file(&self, path: &RemotePath) -> Result<bool> {
        with_retry(&self.cfg.common.retry, "ftp size", || async {
            if path.is_root() {
                return Ok(false);
            }
            let abs = self.abs(path);
            let mut c = self.conn().await?;
            if !c.size {
                drop(c);
                let entry = self.stat_once(path).await?;
                return Ok(entry.is_some_and(|e| e.kind == EntryKind::File));
            }
            // SIZE answers for files only: a directory or nothing is a 550.
            let r = within(self.cfg.common.stall_timeout, c.begin().ftp.size(&abs)).await;
            match c.check(r) {
                Ok(_) => Ok(true),
                Err(Error::Refused(_)) => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn open_read(&self, path: &RemotePath, offset: u64) -> Result<ReadStream> {
        with_retry(&self.cfg.common.retry, "ftp open", || {
            self.open_once(path, offset)
        })
        .await
    }

    async fn write_atomic(
        &self,
        path: &RemotePath,
        src: &mut (dyn AsyncBufRead + Send + Unpin),
        progress: Option<&dyn Progress>,
    ) -> Result<u64> {
        let temp = &self.cfg.common.temp;
        let tmp = path.with_wrapped_name(&temp.prefix, &temp.suffix)?;
        let tmp_abs = self.abs(&tmp);
        let final_abs = self.abs(path);
        let stall = self.cfg.common.stall_timeout;
        // Opening the upload reads nothing from `src` yet, so it can be retried (a pooled
        // connection may have gone stale, the server may be restarting).
        let (mut c, mut up) = with_retry(&self.cfg.common.retry, "ftp upload start", || async {
            let mut c = self.conn().await?;
            let r = within(stall, c.begin().ftp.put_with_stream(&tmp_abs)).await;
            let up = c.check(r)?;
            // The transfer is in flight until its end is confirmed: an upload cancelled
            // meanwhile closes its connection rather than leave the server's reply to it.
            c.begin();
            Ok((c, up))
        })
        .await?;
        // A long upload leaves its server a long file to close (see below): meanwhile, open
        // a second connection if the pool has room, for the size check and the rename.
        let copy = copy_bounded(src, &mut up, stall, progress);
        let spare = async {
            tokio::time::sleep(SPARE_AFTER).await;
            if let Err(e) = self.pool.add_idle(|| self.connect_named()).await {
                tracing::debug!(error = %e, "no second connection for the end of an upload");
            }
            std::future::pending::<()>().await
        };
        let copied = tokio::select! {
            biased;
            r = copy => r,
            () = spare => unreachable!("the spare connection's future never ends"),
        };
        let sent = match copied {
            Ok(n) => n,
            Err(e) => {
                c.set_broken();
                drop(up);
                drop(c);
                let e = match e {
                    CopyError::Source(e) => e,
                    CopyError::Sink(e) => e,
                };
                self.cleanup(&tmp_abs).await;
                return Err(e);
            }
        };
        let r = within(self.cfg.common.stall_timeout, up.finish()).await;
        if let Err(e) = c.check(r) {
            drop(c);
            self.cleanup(&tmp_abs).await;
            return Err(e);
        }
        // The server may answer this connection's next command only once it has closed the
        // uploaded file, which can take long: vsftpd on ext4 truncates the file it stores
        // into, so closing it writes the whole file back first (a third of a second for
        // 1 GiB here). An idle connection answers at once, and sees the whole file, since
        // the server stored every byte before it confirmed the transfer. Only when that
        // connection confirms the size does it also rename; otherwise this connection
        // checks (after the close), as it would without another.
        let mut other = self.pool.try_idle();
        let confirmed = match other.as_mut() {
            Some(o) => self.stored_size(o, &tmp, &tmp_abs).await.ok() == Some(sent),
            None => false,
        };
        let via = match other.as_mut() {
            Some(o) if confirmed => o,
            _ => &mut c,
        };
        let result: Result<()> = async {
            if !confirmed {
                let stored = self.stored_size(via, &tmp, &tmp_abs).await?;
                if stored != sent {
                    return Err(Error::SizeMismatch {
                        path: tmp_abs.clone(),
                        sent,
                        stored,
                    });
                }
            }
            let r = within(stall, via.begin().ftp.rename(&tmp_abs, &final_abs)).await;
            match via.check(r) {
                Ok(()) => Ok(()),
                // Some servers refuse to rename over an existing file: replace it.
                Err(Error::Refused(_)) => {
                    let r = within(stall, via.begin().ftp.rm(&final_abs)).await;
                    via.check(r)?;
                    let r = within(stall, via.begin().ftp.rename(&tmp_abs, &final_abs)).await;
                    via.check(r)
                }
                Err(e) => Err(e),
            }
        }
        .await;
        // The upload's connection goes back to the pool below the other: the next caller
        // takes the one that answers at once.
        drop(c);
        drop(other);
        if let Err(e) = result {
            self.cleanup(&tmp_abs).await;
            return Err(e);
        }
        Ok(sent)
    }

    async fn rename(&self, from: &RemotePath, to: &RemotePath) -> Result<()> {
        let (f, t) = (self.abs(from), self.abs(to));
        with_retry(&self.cfg.common.retry, "ftp rename", || async {
            let mut c = self.conn().await?;
            let r = within(self.cfg.common.stall_timeout, c.begin().ftp.rename(&f, &t)).await;
            c.check(r)
        })
        .await
    }

    async fn delete(&self, path: &RemotePath) -> Result<()> {
        let p = self.abs(path);
        with_retry(&self.cfg.common.retry, "ftp delete", || async {
            let mut c = self.conn().await?;
            let r = within(self.cfg.common.stall_timeout, c.begin().ftp.rm(&p)).await;
            c.check(r)
        })
        .await
    }

    async fn mkdir_all(&self, path: &RemotePath) -> Result<()> {
        with_retry(&self.cfg.common.retry, "ftp mkdir", || async {
            let mut c = self.conn().await?;
            let mut cur = RemotePath::root();
            for part in path.components() {
                cur = cur.join(part)?;
                let abs = self.abs(&cur);
                let r = within(self.cfg.common.stall_timeout, c.begin().ftp.mkdir(&abs)).await;
                match c.check(r) {
                    Ok(()) => {}
                    // Already there (as a directory) is fine; anything else is an error.
                    Err(Error::Refused(msg)) => {
                        let r =
                            within(self.cfg.common.stall_timeout, c.begin().ftp.cwd(&abs)).await;
                        c.check(r)
                            .map_err(|_| Error::Refused(format!("mkdir {abs}: {msg}")))?;
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .await
    }
}

/// The SHA-256 of a DER certificate as lowercase hex: the format
/// [`TlsSettings::pinned_sha256`] takes (colons and upper case are accepted there too).
pub fn cert_fingerprint(der: &[u8]) -> String {
    tls::fingerprint(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(t: Option<SystemTime>) -> u64 {
        t.unwrap()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_unix_listings_with_a_time_zone() {
        let dir = RemotePath::parse("in").unwrap();
        let l = lines(&[
            "total 8",
            "-rw-r--r--    1 1001     1001          123 Jan 05  2024 inv 1.xml",
            "drwxr-xr-x    2 1001     1001         4096 Jan 05  2024 sub",
            "lrwxrwxrwx    1 0        0               7 Jan 05  2024 link -> target",
            "drwxr-xr-x    2 1001     1001         4096 Jan 05  2024 ..",
            "-rw-r--r--    1 1001     1001            9 Jan 05  2024 a\\b",
            "garbage line",
        ]);
        let e = parse_listing(&dir, &l, false, 0);
        let got: Vec<_> = e
            .iter()
            .map(|e| (e.name.as_str(), e.size, e.kind))
            .collect();
        assert_eq!(
            got,
            vec![
                ("inv 1.xml", 123, EntryKind::File),
                ("sub", 4096, EntryKind::Dir),
                ("link", 7, EntryKind::Symlink),
            ]
        );
        assert_eq!(e[0].path.as_string(), "in/inv 1.xml");
        assert_eq!(secs(e[0].mtime), 1_704_412_800); // 2024-01-05T00:00:00Z
        // The same listing from a server on UTC+01:00 and one on UTC-05:00.
        assert_eq!(
            secs(parse_listing(&dir, &l, false, 60)[0].mtime),
            1_704_409_200
        );
        assert_eq!(
            secs(parse_listing(&dir, &l, false, -300)[0].mtime),
            1_704_430_800
        );
    }

    #[test]
    fn parses_dos_listings() {
        let dir = RemotePath::root();
        let l = lines(&[
            "01-05-24  03:04PM       <DIR>          Sub Dir",
            "01-05-24  03:04PM                  123 a.txt",
        ]);
        let e = parse_listing(&dir, &l, false, 0);
        let got: Vec<_> = e
            .iter()
            .map(|e| (e.name.as_str(), e.size, e.kind))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Sub Dir", 0, EntryKind::Dir),
                ("a.txt", 123, EntryKind::File)
            ]
        );
        assert_eq!(secs(e[1].mtime), 1_704_467_040); // 2024-01-05T15:04:00Z
    }

    #[test]
    fn parses_mlsd_and_skips_the_directory_itself() {
        let dir = RemotePath::root();
        let l = lines(&[
            "type=cdir;modify=20240105150400; /",
            "type=pdir;modify=20240105150400; ..",
            "type=file;size=5;modify=20240105150400; a b;c.txt",
            "type=dir;modify=20240105150400; d",
            "type=file;size=1;modify=20240105150400; ../escape",
        ]);
        let e = parse_listing(&dir, &l, true, 600);
        let got: Vec<_> = e
            .iter()
            .map(|e| (e.name.as_str(), e.size, e.kind))
            .collect();
        assert_eq!(
            got,
            vec![("a b;c.txt", 5, EntryKind::File), ("d", 0, EntryKind::Dir)]
        );
        // MLSD times are UTC by definition: the offset does not apply.
        assert_eq!(secs(e[0].mtime), 1_704_467_040);
    }
}
