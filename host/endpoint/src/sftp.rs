//! SFTP through russh + russh-sftp. The server's host key is always verified against keys
//! pinned in the configuration or a known_hosts file; an unknown or changed key is refused
//! with its fingerprint in the error.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::fs::{File as SftpFile, Metadata};
use russh_sftp::protocol::{FileType, StatusCode};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use crate::config::{CommonConfig, Secret, SecretSource};
use crate::error::{Error, Result};
use crate::io::{Progress, StallReader, copy_bounded, read_head};
use crate::pool::{Pool, Pooled};
use crate::retry::with_retry;
use crate::{Endpoint, Entry, EntryKind, ReadStream, RemotePath};

/// Write requests of up to 32 KiB (framing included): what every SFTP server must take
/// (draft-ietf-secsh-filexfer-02).
const SMALL_WRITE: u32 = 32 * 1024;

/// Write requests of 128 KiB of data plus their framing (1 KiB covers it, whatever the
/// handle's length), for servers that speak OpenSSH's extensions: well within the 256 KiB
/// messages OpenSSH's server takes. Whole 128 KiB, so that an upload's 256 KiB chunks
/// ([`crate::io::COPY_BUF`]) go in two requests each, not two and a scrap.
const LARGE_WRITE: u32 = 129 * 1024;

/// The default [`SftpConfig::sync_every`]: often enough that the server's disk writes the
/// upload back as it comes, seldom enough that the syncs cost little next to the data.
/// The syncs never queue up: one is sent only once the last has been answered, so a slow
/// disk simply gets fewer. (1 GiB to OpenSSH on ext4, median of 6 rounds: 2.0 s at 8 MiB,
/// 2.1–2.2 s at 2, 4 and 16 MiB, 2.2 s at 32 MiB, 2.8 s without; see the `upload` bench.)
pub const DEFAULT_SYNC_EVERY: u64 = 8 * 1024 * 1024;

/// Whether the answer to a `statvfs@openssh.com` request shows a server that speaks
/// OpenSSH's extensions: it knew the request (`Some`) and answered it.
fn speaks_openssh<T, E>(statvfs: std::result::Result<Option<T>, E>) -> bool {
    matches!(statvfs, Ok(Some(_)))
}

/// How to log in.
#[derive(Debug, Clone)]
pub enum SftpAuth {
    /// Password login.
    Password(SecretSource),
    /// Public-key login (Ed25519 or RSA, OpenSSH or PKCS#8 format).
    Key {
        /// The private key file.
        path: PathBuf,
        /// The key's passphrase, when it is encrypted.
        passphrase: Option<SecretSource>,
    },
}

/// One SFTP partner.
#[derive(Debug, Clone)]
pub struct SftpConfig {
    /// Host name or IP address.
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// Login name.
    pub user: String,
    /// Password or key.
    pub auth: SftpAuth,
    /// Accepted host keys: OpenSSH public key lines (`ssh-ed25519 AAAA...`) or SHA-256
    /// fingerprints (`SHA256:...`).
    pub host_keys: Vec<String>,
    /// A known_hosts file consulted when the key is not pinned above.
    pub known_hosts: Option<PathBuf>,
    /// The partner root on the server (absolute, e.g. `/` or `/upload`).
    pub root: String,
    /// Pool, timeouts, retries, temporary names.
    pub common: CommonConfig,
    /// While a large upload runs, the server is asked to sync what it has received each
    /// time this many more bytes went out, from a second channel of the same connection
    /// (write-behind): the sync the upload needs before its rename then finds little left
    /// to write. 0 turns it off. Used only with servers that answer OpenSSH's `statvfs`
    /// extension (the sign of an OpenSSH server, which also takes `fsync@openssh.com`).
    pub sync_every: u64,
}

impl SftpConfig {
    /// Defaults for `host:port` with the root `/`; add host keys before use.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        auth: SftpAuth,
    ) -> Self {
        Self {
            host: host.into(),
            port,
            user: user.into(),
            auth,
            host_keys: Vec::new(),
            known_hosts: None,
            root: "/".into(),
            common: CommonConfig::default(),
            sync_every: DEFAULT_SYNC_EVERY,
        }
    }
}

enum Credentials {
    Password(Secret),
    Key(Arc<russh::keys::PrivateKey>),
}

/// Why a host key was refused, recorded by the handler for the error message.
#[derive(Clone, Default)]
struct Refusal(Arc<Mutex<Option<(String, String)>>>);

struct Checker {
    pinned_keys: Arc<Vec<PublicKey>>,
    pinned_fps: Arc<Vec<String>>,
    known_hosts: Option<PathBuf>,
    host: String,
    port: u16,
    refusal: Refusal,
}

impl Checker {
    fn refuse(&self, fp: String, why: &str) -> bool {
        *self.refusal.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((fp, why.to_owned()));
        false
    }
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = offered else {
            return Ok(self.refuse(
                "(a certificate)".into(),
                "host certificates are not accepted",
            ));
        };
        let fp = key.fingerprint(HashAlg::Sha256).to_string();
        if self
            .pinned_keys
            .iter()
            .any(|k| k.key_data() == key.key_data())
            || self.pinned_fps.contains(&fp)
        {
            return Ok(true);
        }
        if let Some(path) = &self.known_hosts {
            match russh::keys::check_known_hosts_path(&self.host, self.port, key, path) {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(russh::keys::Error::KeyChanged { line }) => {
                    return Ok(self.refuse(
                        fp,
                        &format!("it differs from line {line} of {}", path.display()),
                    ));
                }
                Err(e) => {
                    return Ok(self.refuse(fp, &format!("known_hosts {}: {e}", path.display())));
                }
            }
        }
        Ok(self.refuse(fp, "it is not a pinned or known key"))
    }
}

/// One SSH connection with its SFTP channel.
pub struct SftpConn {
    sftp: SftpSession,
    ssh: client::Handle<Checker>,
    /// The server answered OpenSSH's `statvfs` extension: an OpenSSH server, or one that
    /// speaks its extensions.
    openssh: bool,
}

/// An SFTP partner.
pub struct SftpEndpoint {
    cfg: SftpConfig,
    creds: Credentials,
    pinned_keys: Arc<Vec<PublicKey>>,
    pinned_fps: Arc<Vec<String>>,
    ssh_config: Arc<client::Config>,
    pool: Pool<SftpConn>,
}

fn map_sftp(what: &str, e: SftpError) -> Error {
    match e {
        SftpError::Status(s) => match s.status_code {
            StatusCode::NoSuchFile => Error::NotFound(what.to_owned()),
            StatusCode::PermissionDenied => Error::Refused(format!("{what}: permission denied")),
            StatusCode::NoConnection | StatusCode::ConnectionLost => Error::Connection(
                std::io::Error::new(std::io::ErrorKind::ConnectionAborted, s.error_message),
            ),
            _ => Error::Refused(format!("{what}: {}", s.error_message)),
        },
        SftpError::Timeout => Error::Connection(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{what}: the SFTP server did not answer in time"),
        )),
        SftpError::IO(m) => Error::Connection(std::io::Error::other(m)),
        other => Error::Protocol(other.to_string()),
    }
}

fn map_ssh(e: russh::Error) -> Error {
    match e {
        russh::Error::IO(io) => Error::Connection(io),
        russh::Error::ConnectionTimeout | russh::Error::KeepaliveTimeout => Error::Connection(
            std::io::Error::new(std::io::ErrorKind::TimedOut, e.to_string()),
        ),
        russh::Error::Disconnect | russh::Error::HUP | russh::Error::SendError => {
            Error::Connection(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                e.to_string(),
            ))
        }
        other => Error::Protocol(other.to_string()),
    }
}

fn kind_of(m: &Metadata) -> EntryKind {
    match m.file_type() {
        FileType::File => EntryKind::File,
        FileType::Dir => EntryKind::Dir,
        FileType::Symlink => EntryKind::Symlink,
        FileType::Other => EntryKind::Other,
    }
}

fn entry(path: RemotePath, name: String, m: &Metadata) -> Entry {
    Entry {
        name,
        path,
        size: m.size.unwrap_or(0),
        mtime: m.modified().ok(),
        kind: kind_of(m),
    }
}

impl SftpEndpoint {
    /// Builds the endpoint: reads secrets and the key file and parses the pinned host keys
    /// now. At least one pinned key or a known_hosts file is required.
    pub fn new(cfg: SftpConfig) -> Result<Self> {
        let mut keys = Vec::new();
        let mut fps = Vec::new();
        for k in &cfg.host_keys {
            let k = k.trim();
            if k.starts_with("SHA256:") {
                fps.push(k.to_owned());
            } else {
                // Accept "host ssh-ed25519 AAAA..." (ssh-keyscan output) as well.
                let start = k.find("ssh-").or_else(|| k.find("ecdsa-")).unwrap_or(0);
                keys.push(PublicKey::from_openssh(&k[start..]).map_err(|e| {
                    Error::Config(format!(
                        "pinned host key {k:?} is not an OpenSSH public key: {e}"
                    ))
                })?);
            }
        }
        if keys.is_empty() && fps.is_empty() && cfg.known_hosts.is_none() {
            return Err(Error::Config(
                "SFTP needs a pinned host key or a known_hosts file".into(),
            ));
        }
        let creds = match &cfg.auth {
            SftpAuth::Password(s) => Credentials::Password(s.resolve()?),
            SftpAuth::Key { path, passphrase } => {
                let pass = passphrase.as_ref().map(|p| p.resolve()).transpose()?;
                let key = russh::keys::load_secret_key(path, pass.as_ref().map(|p| p.expose()))
                    .map_err(|e| Error::Config(format!("key file {}: {e}", path.display())))?;
                Credentials::Key(Arc::new(key))
            }
        };
        let ssh_config = Arc::new(client::Config {
            inactivity_timeout: None,
            // A larger window keeps more data in flight on fast links.
            window_size: 8 * 1024 * 1024,
            nodelay: true,
            preferred: russh::Preferred {
                // AES-GCM runs on the CPU's AES instructions through ring: faster than
                // ChaCha20-Poly1305 for bulk transfers.
                cipher: std::borrow::Cow::Borrowed(&[
                    russh::cipher::AES_256_GCM,
                    russh::cipher::AES_128_GCM,
                    russh::cipher::CHACHA20_POLY1305,
                    russh::cipher::AES_256_CTR,
                    russh::cipher::AES_128_CTR,
                ]),
                ..Default::default()
            },
            ..Default::default()
        });
        let pool = Pool::new(cfg.common.max_connections, cfg.common.connect_timeout);
        Ok(Self {
            cfg,
            creds,
            pinned_keys: Arc::new(keys),
            pinned_fps: Arc::new(fps),
            ssh_config,
            pool,
        })
    }

    /// How many connects the server refused as busy so far (a sign `max_connections`
    /// exceeds the partner's per-IP cap).
    pub fn busy_refusals(&self) -> u64 {
        self.pool.busy_refusals()
    }

    fn abs(&self, p: &RemotePath) -> String {
        p.under(&self.cfg.root)
    }

    async fn connect(&self) -> Result<SftpConn> {
        let refusal = Refusal::default();
        let checker = Checker {
            pinned_keys: self.pinned_keys.clone(),
            pinned_fps: self.pinned_fps.clone(),
            known_hosts: self.cfg.known_hosts.clone(),
            host: self.cfg.host.clone(),
            port: self.cfg.port,
            refusal: refusal.clone(),
        };
        let addr = (self.cfg.host.as_str(), self.cfg.port);
        let mut ssh = match client::connect(self.ssh_config.clone(), addr, checker).await {
            Ok(h) => h,
            Err(e) => {
                if let Some((fingerprint, reason)) =
                    refusal.0.lock().unwrap_or_else(|p| p.into_inner()).take()
                {
                    return Err(Error::HostKey {
                        host: format!("{}:{}", self.cfg.host, self.cfg.port),
                        fingerprint,
                        reason,
                    });
                }
                return Err(map_ssh(e));
            }
        };
        let auth = match &self.creds {
            Credentials::Password(p) => ssh
                .authenticate_password(self.cfg.user.clone(), p.expose())
                .await
                .map_err(map_ssh)?,
            Credentials::Key(k) => {
                let hash = ssh
                    .best_supported_rsa_hash()
                    .await
                    .map_err(map_ssh)?
                    .flatten();
                ssh.authenticate_publickey(
                    self.cfg.user.clone(),
                    PrivateKeyWithHashAlg::new(k.clone(), hash),
                )
                .await
                .map_err(map_ssh)?
            }
        };
        if !auth.success() {
            return Err(Error::Auth {
                user: self.cfg.user.clone(),
                detail: "the server refused the credentials".into(),
            });
        }
        // Large writes cut the requests (and acknowledgements) of an upload fourfold, but the
        // protocol only promises 32 KiB: they go to servers that speak OpenSSH's extensions
        // (which take 256 KiB messages; one that announces limits@openssh.com gets writes no
        // larger than it says), as OpenSSH's own client does. Other servers get a session of
        // small writes instead, at the cost of a second channel per connection.
        let mut sftp = self.sftp_session(&ssh, LARGE_WRITE).await?;
        let openssh = speaks_openssh(sftp.fs_info(".").await);
        if !openssh {
            let _ = sftp.close().await;
            sftp = self.sftp_session(&ssh, SMALL_WRITE).await?;
        }
        Ok(SftpConn { sftp, ssh, openssh })
    }

    /// An SFTP session on a new channel of `ssh`, whose write requests are at most
    /// `write_len` bytes long (framing included).
    async fn sftp_session(
        &self,
        ssh: &client::Handle<Checker>,
        write_len: u32,
    ) -> Result<SftpSession> {
        let channel = ClosedIfDropped(Some(ssh.channel_open_session().await.map_err(map_ssh)?));
        channel
            .get()
            .request_subsystem(true, "sftp")
            .await
            .map_err(map_ssh)?;
        let config = russh_sftp::client::Config {
            max_write_packet_len: write_len,
            ..Default::default()
        };
        let sftp = SftpSession::new_with_config(channel.take().into_stream(), config)
            .await
            .map_err(|e| map_sftp("SFTP start", e))?;
        sftp.set_timeout(self.cfg.common.stall_timeout.as_secs().max(1));
        Ok(sftp)
    }

    /// Copies an upload's content from `src` into `file`, the temporary file `tmp` open on
    /// `conn`, as [`copy_bounded`] does (the final flush syncs it), while another channel
    /// of `conn` asks the server to sync what it has so far every
    /// [`SftpConfig::sync_every`] bytes ([`Self::sync_behind`]). Returns the bytes copied.
    ///
    /// The server writes an upload to its disk's cache as it comes; the sync before the
    /// rename must then write all of it back, and on a disk that is slow or busy at that
    /// moment this can take longer than sending the data did. Synced on the way, it goes to
    /// disk while the rest is still coming. The upload's own requests do not wait for these
    /// syncs (the server handles each channel in a process of its own), and the copy's end
    /// does not either: a sync or an open still under way then is given up. Only the close
    /// of the second handle is awaited, after a copy that succeeded, so that no handle is
    /// open on the file when it is renamed.
    async fn copy_syncing_behind<R: AsyncBufRead + Send + Unpin>(
        &self,
        conn: &SftpConn,
        tmp: &str,
        src: &mut R,
        file: &mut SftpFile,
        progress: Option<&dyn Progress>,
    ) -> Result<u64> {
        let stall = self.cfg.common.stall_timeout;
        let every = self.cfg.sync_every;
        if every == 0 || !conn.openssh {
            return Ok(copy_bounded(src, file, stall, progress).await?);
        }
        let (sent, receiver) = tokio::sync::watch::channel(0u64);
        let counted = Counted {
            sent,
            inner: progress,
        };
        let mut side = None;
        let copied = {
            let copy = copy_bounded(src, file, stall, Some(&counted));
            tokio::pin!(copy);
            tokio::select! {
                biased;
                copied = &mut copy => copied,
                // The syncs ended early: the copy goes on alone.
                () = self.sync_behind(conn, tmp, receiver, every, &mut side) => copy.await,
            }
        };
        // After a failed copy, the second handle and its channel are dropped instead: their
        // closes go out without waiting, as the connection may be why the copy failed.
        if let Some((sftp, side_file)) = side
            && copied.is_ok()
        {
            let _ = side_file.close().await;
            let _ = sftp.close().await;
        }
        Ok(copied?)
    }

    /// Asks the server to sync the temporary file `tmp` each time `sent` (the bytes sent so
    /// far) grew by `every`; runs until the caller stops polling it, or ends early when a
    /// sync cannot be had. The channel and the read-only handle the syncs go through are
    /// opened at the first one (so uploads smaller than `every` never open them) and left
    /// in `side` for the caller to close. A failure only ends the syncs: the upload's own
    /// sync before its rename stays the guarantee, so it never fails the upload.
    async fn sync_behind(
        &self,
        conn: &SftpConn,
        tmp: &str,
        mut sent: tokio::sync::watch::Receiver<u64>,
        every: u64,
        side: &mut Option<(SftpSession, SftpFile)>,
    ) {
        let stall = self.cfg.common.stall_timeout;
        let mut synced = 0u64;
        while sent.changed().await.is_ok() {
            let done = *sent.borrow_and_update();
            if done < synced.saturating_add(every) {
                continue;
            }
            let (_, file) = match side {
                Some(opened) => &*opened,
                None => {
                    let opened = tokio::time::timeout(stall, async {
                        let sftp = self.sftp_session(&conn.ssh, SMALL_WRITE).await?;
                        let file = sftp.open(tmp).await.map_err(|e| map_sftp(tmp, e))?;
                        Ok((sftp, file))
                    })
                    .await
                    .unwrap_or(Err(Error::Timeout {
                        what: "opening an upload for its syncs",
                        after: stall,
                    }));
                    match opened {
                        Ok(opened) => side.insert(opened),
                        Err(e) => {
                            tracing::debug!(%tmp, error = %e, "no syncs on the way for this upload");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = file.sync_all().await {
                tracing::debug!(%tmp, error = %e, "syncs on the way stopped");
                return;
            }
            synced = done;
        }
    }

    async fn conn(&self) -> Result<Pooled<SftpConn>> {
        self.pool.get(|| self.connect()).await
    }

    async fn list_once(&self, dir: &RemotePath) -> Result<Vec<Entry>> {
        let abs = self.abs(dir);
        let mut c = self.conn().await?;
        let r = c
            .sftp
            .read_dir(abs.clone())
            .await
            .map_err(|e| map_sftp(&abs, e));
        let items = c.check(r)?;
        let mut out = Vec::new();
        for e in items {
            let name = e.file_name();
            if name == "." || name == ".." {
                continue;
            }
            match dir.join(&name) {
                Ok(path) => out.push(entry(path, name, &e.metadata())),
                Err(err) => tracing::warn!(%dir, error = %err, "skipping an unsafe remote name"),
            }
        }
        Ok(out)
    }

    async fn stat_once(&self, path: &RemotePath) -> Result<Option<Entry>> {
        let abs = self.abs(path);
        let mut c = self.conn().await?;
        let r = c
            .sftp
            .symlink_metadata(abs.clone())
            .await
            .map_err(|e| map_sftp(&abs, e));
        match c.check(r) {
            Ok(m) => Ok(Some(entry(
                path.clone(),
                path.file_name().unwrap_or("").to_owned(),
                &m,
            ))),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn open_once(&self, path: &RemotePath, offset: u64) -> Result<ReadStream> {
        use tokio::io::AsyncSeekExt;
        let abs = self.abs(path);
        let mut c = self.conn().await?;
        let r = c
            .sftp
            .open(abs.clone())
            .await
            .map_err(|e| map_sftp(&abs, e));
        let mut file = c.check(r)?;
        if offset > 0 {
            let r = file
                .seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(Error::Io);
            c.check(r)?;
        }
        Ok(Box::new(SftpRead {
            file: StallReader::new(file, self.cfg.common.stall_timeout),
            conn: c,
        }))
    }
}

/// A download; the SSH connection returns to the pool when it is dropped, unless it broke.
struct SftpRead {
    file: StallReader<SftpFile>,
    conn: Pooled<SftpConn>,
}

impl AsyncRead for SftpRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.file).poll_read(cx, buf);
        if let Poll::Ready(Err(_)) = &r {
            this.conn.set_broken();
        }
        r
    }
}

#[async_trait]
impl Endpoint for SftpEndpoint {
    async fn list(&self, dir: &RemotePath) -> Result<Vec<Entry>> {
        with_retry(&self.cfg.common.retry, "sftp list", || self.list_once(dir)).await
    }

    async fn stat(&self, path: &RemotePath) -> Result<Option<Entry>> {
        with_retry(&self.cfg.common.retry, "sftp stat", || self.stat_once(path)).await
    }

    async fn open_read(&self, path: &RemotePath, offset: u64) -> Result<ReadStream> {
        with_retry(&self.cfg.common.retry, "sftp open", || {
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
        let tmp = self.abs(&path.with_wrapped_name(&temp.prefix, &temp.suffix)?);
        let dst = self.abs(path);
        let stall = self.cfg.common.stall_timeout;
        // A small content is read whole first: one write request may then carry it.
        let (head, whole) = read_head(src, ONE_REQUEST, stall).await?;
        // Opening the upload reads nothing from `src` yet, so it can be retried.
        let (mut c, mut file) = with_retry(&self.cfg.common.retry, "sftp upload start", || async {
            let mut c = self.conn().await?;
            let r = c
                .sftp
                .create(tmp.clone())
                .await
                .map_err(|e| map_sftp(&tmp, e));
            let file = c.check(r)?;
            Ok((c, file))
        })
        .await?;
        let result: Result<u64> = async {
            let timeout = |_| Error::Timeout {
                what: "stalled upload",
                after: stall,
            };
            let sent = if whole {
                let n = tokio::time::timeout(stall, file.write(&head))
                    .await
                    .map_err(timeout)?
                    .map_err(Error::Connection)?;
                if n == head.len() {
                    if let Some(p) = progress {
                        p.advanced(n as u64);
                    }
                    return one_request_end(&c.sftp, file, n as u64, &tmp, &dst).await;
                }
                // The session writes less at once than this: the rest, then a flush.
                tokio::time::timeout(stall, async {
                    file.write_all(&head[n..]).await?;
                    file.flush().await
                })
                .await
                .map_err(timeout)?
                .map_err(Error::Connection)?;
                if let Some(p) = progress {
                    p.advanced(head.len() as u64);
                }
                head.len() as u64
            } else {
                let mut rest = (&head[..]).chain(&mut *src);
                self.copy_syncing_behind(&c, &tmp, &mut rest, &mut file, progress)
                    .await?
            };
            // Several requests: every write is acknowledged and the file synced (the copy
            // flushes) before its size is asked for, while it is closed, in one round trip.
            let (closed, m) = tokio::join!(file.shutdown(), c.sftp.metadata(tmp.clone()));
            closed.map_err(Error::Connection)?;
            let stored = m.map_err(|e| map_sftp(&tmp, e))?.size.unwrap_or(0);
            check_stored(&tmp, sent, stored)?;
            let renamed = c.sftp.rename(tmp.clone(), dst.clone()).await;
            rename_over(&c.sftp, &tmp, &dst, renamed).await?;
            Ok(sent)
        }
        .await;
        let result = c.check(result);
        if result.is_err() {
            drop(c);
            if let Ok(c) = self.conn().await {
                let _ = c.sftp.remove_file(tmp.clone()).await;
            }
        }
        result
    }

    async fn rename(&self, from: &RemotePath, to: &RemotePath) -> Result<()> {
        let (f, t) = (self.abs(from), self.abs(to));
        with_retry(&self.cfg.common.retry, "sftp rename", || async {
            let mut c = self.conn().await?;
            let r = c
                .sftp
                .rename(f.clone(), t.clone())
                .await
                .map_err(|e| map_sftp(&f, e));
            c.check(r)
        })
        .await
    }

    async fn delete(&self, path: &RemotePath) -> Result<()> {
        let p = self.abs(path);
        with_retry(&self.cfg.common.retry, "sftp delete", || async {
            let mut c = self.conn().await?;
            let r = c
                .sftp
                .remove_file(p.clone())
                .await
                .map_err(|e| map_sftp(&p, e));
            c.check(r)
        })
        .await
    }

    async fn mkdir_all(&self, path: &RemotePath) -> Result<()> {
        with_retry(&self.cfg.common.retry, "sftp mkdir", || async {
            let mut c = self.conn().await?;
            let mut cur = RemotePath::root();
            for part in path.components() {
                cur = cur.join(part)?;
                let abs = self.abs(&cur);
                let r = c
                    .sftp
                    .create_dir(abs.clone())
                    .await
                    .map_err(|e| map_sftp(&abs, e));
                if let Err(e) = c.check(r) {
                    let r = c
                        .sftp
                        .metadata(abs.clone())
                        .await
                        .map_err(|e| map_sftp(&abs, e));
                    match c.check(r) {
                        Ok(m) if m.is_dir() => {}
                        _ => return Err(e),
                    }
                }
            }
            Ok(())
        })
        .await
    }
}

/// An SSH channel that is closed if it is dropped before [`Self::take`]: one dropped on
/// the way to becoming an SFTP stream (a refused subsystem, a timeout, a caller that gave
/// up) would otherwise stay open on the server, counting against its sessions per
/// connection. (The stream closes its channel when it is dropped.)
struct ClosedIfDropped(Option<russh::Channel<client::Msg>>);

impl ClosedIfDropped {
    fn get(&self) -> &russh::Channel<client::Msg> {
        self.0.as_ref().expect("present until taken")
    }

    fn take(mut self) -> russh::Channel<client::Msg> {
        self.0.take().expect("present until taken")
    }
}

impl Drop for ClosedIfDropped {
    fn drop(&mut self) {
        if let Some(channel) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = channel.close().await;
            });
        }
    }
}

/// A [`Progress`] that also publishes the running count, for [`SftpEndpoint::sync_behind`].
struct Counted<'a> {
    sent: tokio::sync::watch::Sender<u64>,
    inner: Option<&'a dyn Progress>,
}

impl Progress for Counted<'_> {
    fn advanced(&self, done: u64) {
        self.sent.send_replace(done);
        if let Some(p) = self.inner {
            p.advanced(done);
        }
    }
}

/// Contents up to this size are read whole before their upload opens, so that one write
/// request can carry them (below the smallest write size, framing and handle included).
const ONE_REQUEST: usize = SMALL_WRITE as usize - 1024;

/// Ends an upload whose `sent` bytes went in the one write request already sent on `file`.
///
/// SFTP servers process the requests on one file in the order they come and answer as if
/// each had waited for the one before, so the sync and the size check follow the write at
/// once, and the close and the rename follow them: three round trips in all, with the open,
/// where waiting for each answer takes five. The name is given only to a file the server
/// synced and found `sent` bytes long; a file written by one request from empty is
/// complete at that length.
async fn one_request_end(
    sftp: &SftpSession,
    mut file: SftpFile,
    sent: u64,
    tmp: &str,
    dst: &str,
) -> Result<u64> {
    let (synced, m) = tokio::join!(file.sync_all(), file.metadata());
    synced.map_err(|e| map_sftp(tmp, e))?;
    let stored = m.map_err(|e| map_sftp(tmp, e))?.size.unwrap_or(0);
    check_stored(tmp, sent, stored)?;
    let (closed, renamed) = tokio::join!(file.shutdown(), sftp.rename(tmp, dst));
    // Renamed but not closed cleanly: reported as failed, and the retry sends it again
    // under the same name.
    closed.map_err(Error::Connection)?;
    rename_over(sftp, tmp, dst, renamed).await?;
    Ok(sent)
}

/// A size mismatch error unless the server stored what was sent.
fn check_stored(tmp: &str, sent: u64, stored: u64) -> Result<()> {
    if stored == sent {
        return Ok(());
    }
    Err(Error::SizeMismatch {
        path: tmp.to_owned(),
        sent,
        stored,
    })
}

/// Completes the rename of `tmp` to `dst` whose first attempt gave `first`: SFTPv3 rename
/// refuses an existing target, which is then removed and the rename tried again. The final
/// name briefly does not exist, but it never shows partial content.
async fn rename_over(
    sftp: &SftpSession,
    tmp: &str,
    dst: &str,
    first: std::result::Result<(), SftpError>,
) -> Result<()> {
    let Err(e) = first else {
        return Ok(());
    };
    match sftp.try_exists(dst).await {
        Ok(true) => {
            sftp.remove_file(dst).await.map_err(|e| map_sftp(dst, e))?;
            sftp.rename(tmp, dst).await.map_err(|e| map_sftp(dst, e))
        }
        _ => Err(map_sftp(dst, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_writes_only_for_servers_that_answer_openssh_statvfs() {
        assert!(speaks_openssh::<u8, ()>(Ok(Some(1))));
        // The extension is not announced: the client never asked.
        assert!(!speaks_openssh::<u8, ()>(Ok(None)));
        // Announced, but the request failed: no guess either way.
        assert!(!speaks_openssh::<u8, &str>(Err("permission denied")));
    }
}
