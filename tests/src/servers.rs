//! Real FTP (vsftpd) and SFTP (OpenSSH sshd) servers on 127.0.0.1 for tests and benchmarks.
//!
//! Each server gets its own ports, a throwaway system user, a temporary folder, and (for
//! FTPS) a throwaway CA and certificate or (for SFTP) throwaway host and client keys. The
//! Debian packages are installed when missing (as root). Servers run in the foreground in
//! their own process group and are stopped by that id when dropped, even when a test fails.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// Installs vsftpd, openssh-server, rclone, curl and openssl when one is missing (needs root).
pub fn ensure_installed() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| install().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn install() -> Result<()> {
    let wanted = [
        ("vsftpd", "/usr/sbin/vsftpd"),
        ("openssh-server", "/usr/sbin/sshd"),
        ("rclone", "/usr/bin/rclone"),
        ("curl", "/usr/bin/curl"),
        ("openssl", "/usr/bin/openssl"),
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(_, bin)| !Path::new(bin).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "packages {missing:?} are missing and only root can install them"
    );
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A free TCP port on 127.0.0.1 (asked from the kernel, so parallel test processes differ).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// A run of `n` consecutive free ports (for vsftpd's passive range).
fn free_port_range(n: u16) -> u16 {
    for _ in 0..200 {
        let base = 20000 + fastrand_u16() % 30000;
        let ok = (base..base + n)
            .step_by(7)
            .all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if ok {
            return base;
        }
    }
    panic!("no free port range of {n}");
}

fn fastrand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    ((nanos ^ std::process::id().wrapping_mul(2654435761)) % 65521) as u16
}

/// A temporary system user, deleted when dropped.
pub struct TestUser {
    /// Login name.
    pub name: String,
    /// Password (throwaway, random).
    pub password: String,
}

/// useradd/userdel lock /etc/passwd: one at a time within this process.
static USER_LOCK: Mutex<()> = Mutex::new(());

impl TestUser {
    /// Creates a user whose home is `home` (not created) with a random password.
    pub fn create(home: &Path) -> Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "wt{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let password = format!("pw-{:x}-{:x}", fastrand_u16(), std::process::id());
        let _g = USER_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        retry_locked(|| {
            run(Command::new("useradd")
                .args(["-M", "-s", "/bin/bash", "-d"])
                .arg(home)
                .arg(&name))
        })?;
        let user = TestUser {
            name: name.clone(),
            password: password.clone(),
        };
        let mut child = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .context("chpasswd")?;
        child
            .stdin
            .take()
            .context("chpasswd stdin")?
            .write_all(format!("{name}:{password}\n").as_bytes())?;
        ensure!(child.wait()?.success(), "chpasswd failed");
        Ok(user)
    }

    /// Gives `path` (recursively) to this user.
    pub fn chown(&self, path: &Path) -> Result<()> {
        run(Command::new("chown")
            .arg("-R")
            .arg(format!("{0}:{0}", self.name))
            .arg(path))
        .or_else(|_| run(Command::new("chown").arg("-R").arg(&self.name).arg(path)))
    }
}

fn retry_locked(mut f: impl FnMut() -> Result<()>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match f() {
            Ok(()) => return Ok(()),
            // /etc/passwd locked by another useradd, or processes of the user still exiting.
            Err(e)
                if Instant::now() < deadline
                    && ["lock", "used by process"]
                        .iter()
                        .any(|m| format!("{e:#}").contains(m)) =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _g = USER_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = retry_locked(|| run(Command::new("userdel").arg(&self.name))) {
            // Last resort: remove the account even if a straggling process still uses it.
            if let Err(e2) = run(Command::new("userdel").arg("-f").arg(&self.name)) {
                eprintln!("could not delete test user {}: {e:#}; {e2:#}", self.name);
            }
        }
    }
}

/// A server process running in its own process group.
struct Proc {
    child: Option<Child>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Result<Self> {
        let child = cmd
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        Ok(Self { child: Some(child) })
    }

    /// The process id (also its process group id).
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the server and every session process it forked. Session processes may start
    /// their own sessions (setsid), so they are found by walking /proc from the server's pid.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pids = descendants(child.id());
            // SAFETY: kill(2) on the process group we created and on processes forked from it.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
                for pid in &pids {
                    libc::kill(*pid as i32, libc::SIGKILL);
                }
            }
            let _ = child.kill();
            let _ = child.wait();
            // Killed sessions vanish asynchronously (reparented, then reaped): wait for them so
            // that their user can be deleted.
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline
                && pids
                    .iter()
                    .any(|p| Path::new(&format!("/proc/{p}")).exists())
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Proc {
    /// Sends `sig` to the server and every process forked from it.
    fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            let mut pids = descendants(pid);
            pids.push(pid);
            for p in pids {
                // SAFETY: kill(2) on processes we started or that were forked from them.
                unsafe {
                    libc::kill(p as i32, sig);
                }
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every process below `root` in the process tree (from /proc/<pid>/stat).
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            // The command name may contain spaces: the fields after the last ')' are fixed.
            if let Ok(stat) = fs::read_to_string(e.path().join("stat"))
                && let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..])
                && let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok())
            {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

/// Polls until `port` accepts a connection that greets with `banner`.
fn wait_for_banner(port: u16, banner: &str, log: &Path, proc_: &mut Proc) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 64];
            if let Ok(n) = s.read(&mut buf)
                && String::from_utf8_lossy(&buf[..n]).starts_with(banner)
            {
                return Ok(());
            }
        }
        if let Some(c) = proc_.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            bail!(
                "server exited with {status}: {}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "server on port {port} not ready: {}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn make_dirs(base: &Path) -> Result<PathBuf> {
    // The throwaway user must be able to reach its folder.
    fs::set_permissions(base, fs::Permissions::from_mode(0o755))?;
    let data = base.join("data");
    fs::create_dir_all(&data)?;
    Ok(data)
}

/// How vsftpd secures connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FtpTls {
    /// Plain FTP only.
    None,
    /// Explicit FTPS (`AUTH TLS`) required for login and data.
    Explicit,
    /// Implicit FTPS (TLS from the first byte).
    Implicit,
}

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it.
pub struct TestCa {
    /// The CA certificate (PEM): what a client trusts.
    pub ca_pem: PathBuf,
    /// The server certificate (PEM).
    pub cert_pem: PathBuf,
    /// The server's private key (PEM).
    pub key_pem: PathBuf,
}

impl TestCa {
    /// Creates the CA and the certificate under `dir`.
    pub fn create(dir: &Path) -> Result<Self> {
        let p = |n: &str| dir.join(n);
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=wharf test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.pem")))?;
        run(Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .arg("-keyout")
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr")))?;
        fs::write(
            p("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )?;
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(p("ca.pem"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-extfile")
            .arg(p("ext.cnf"))
            .arg("-out")
            .arg(p("server.pem")))?;
        Ok(Self {
            ca_pem: p("ca.pem"),
            cert_pem: p("server.pem"),
            key_pem: p("server.key"),
        })
    }

    /// The server certificate in DER (for pinning by SHA-256).
    pub fn cert_der(&self) -> Result<Vec<u8>> {
        let out = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&self.cert_pem)
            .output()?;
        ensure!(out.status.success(), "openssl x509 failed");
        Ok(out.stdout)
    }
}

/// Settings of a [`Vsftpd`] instance.
#[derive(Debug, Clone)]
pub struct VsftpdOptions {
    /// TLS mode.
    pub tls: FtpTls,
    /// vsftpd's `max_per_ip`.
    pub max_per_ip: u32,
    /// The address announced in `PASV` replies (a loopback address other than 127.0.0.1
    /// stands in for the private address of a server behind NAT).
    pub pasv_address: String,
}

impl Default for VsftpdOptions {
    fn default() -> Self {
        Self {
            tls: FtpTls::None,
            max_per_ip: 50,
            pasv_address: "127.0.0.1".into(),
        }
    }
}

/// A running vsftpd on 127.0.0.1 with its own user and folder.
pub struct Vsftpd {
    // Declared first so it is dropped first: the server and its sessions must be gone
    // before the user is deleted (userdel refuses a user with running processes).
    proc_: Proc,
    /// Control port.
    pub port: u16,
    /// The FTP user.
    pub user: TestUser,
    /// The folder the user sees as `/`.
    pub root: PathBuf,
    /// The CA and certificate, when TLS is on.
    pub ca: Option<TestCa>,
    conf: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Vsftpd {
    /// Installs (if needed) and starts vsftpd.
    pub fn start(opts: VsftpdOptions) -> Result<Self> {
        ensure_installed()?;
        fs::create_dir_all("/var/run/vsftpd/empty")?;
        let dir = tempfile::Builder::new().prefix("wharf-vsftpd-").tempdir()?;
        let root = make_dirs(dir.path())?;
        let user = TestUser::create(&root)?;
        user.chown(&root)?;
        let port = free_port();
        let pasv = free_port_range(100);
        let log = dir.path().join("vsftpd.log");
        let mut conf = format!(
            "listen=YES\nlisten_ipv6=NO\nlisten_address=127.0.0.1\nlisten_port={port}\n\
             background=NO\nanonymous_enable=NO\nlocal_enable=YES\nwrite_enable=YES\n\
             local_umask=022\nchroot_local_user=YES\nallow_writeable_chroot=YES\n\
             local_root={root}\npam_service_name=vsftpd\nsecure_chroot_dir=/var/run/vsftpd/empty\n\
             seccomp_sandbox=NO\npasv_enable=YES\npasv_address={pasv_addr}\n\
             pasv_min_port={pasv}\npasv_max_port={pasv_max}\nmax_per_ip={max}\nmax_clients=500\n\
             use_localtime=NO\nlog_ftp_protocol=YES\nxferlog_enable=YES\nvsftpd_log_file={log}\n\
             userlist_enable=NO\nforce_dot_files=YES\nidle_session_timeout=120\ndata_connection_timeout=60\n",
            root = root.display(),
            pasv_max = pasv + 99,
            max = opts.max_per_ip,
            pasv_addr = opts.pasv_address,
            log = log.display(),
        );
        let ca = if opts.tls == FtpTls::None {
            None
        } else {
            let ca = TestCa::create(dir.path())?;
            conf.push_str(&format!(
                "ssl_enable=YES\nrsa_cert_file={}\nrsa_private_key_file={}\n\
                 require_ssl_reuse=NO\nforce_local_data_ssl=YES\nforce_local_logins_ssl=YES\n\
                 ssl_ciphers=HIGH\nssl_tlsv1=YES\nssl_sslv2=NO\nssl_sslv3=NO\n",
                ca.cert_pem.display(),
                ca.key_pem.display()
            ));
            if opts.tls == FtpTls::Implicit {
                conf.push_str("implicit_ssl=YES\n");
            }
            Some(ca)
        };
        let conf_path = dir.path().join("vsftpd.conf");
        fs::write(&conf_path, conf)?;
        let startup = dir.path().join("vsftpd.startup.log");
        let proc_ = Self::spawn(&conf_path, &startup)?;
        let mut server = Self {
            port,
            user,
            root,
            ca,
            conf: conf_path,
            log,
            proc_,
            _dir: dir,
        };
        server.wait_ready(&startup)?;
        Ok(server)
    }

    fn spawn(conf: &Path, startup: &Path) -> Result<Proc> {
        // vsftpd reports start-up errors on fd 0.
        let log = fs::File::create(startup)?;
        Proc::spawn(
            Command::new("/usr/sbin/vsftpd")
                .arg(conf)
                .stdin(Stdio::from(log))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    }

    fn wait_ready(&mut self, startup: &Path) -> Result<()> {
        if self.ca.as_ref().is_some_and(|_| {
            fs::read_to_string(&self.conf)
                .unwrap_or_default()
                .contains("implicit_ssl=YES")
        }) {
            // The banner is inside TLS: only wait for the port.
            let deadline = Instant::now() + Duration::from_secs(15);
            while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                ensure!(
                    Instant::now() < deadline,
                    "implicit FTPS server not ready: {}",
                    fs::read_to_string(startup).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            return Ok(());
        }
        wait_for_banner(self.port, "220", startup, &mut self.proc_)
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.proc_.pid()
    }

    /// Kills the server and all its sessions (as a crash would).
    pub fn kill(&mut self) {
        self.proc_.kill();
    }

    /// Freezes the server and its sessions (SIGSTOP): connections stay open but nothing
    /// answers, as with a hung server or a dead network path.
    pub fn pause(&self) {
        self.proc_.signal(libc::SIGSTOP);
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.proc_.signal(libc::SIGCONT);
    }

    /// Starts the server again with the same settings (after [`Vsftpd::kill`]).
    pub fn restart(&mut self) -> Result<()> {
        self.proc_.kill();
        let startup = self._dir.path().join("vsftpd.restart.log");
        self.proc_ = Self::spawn(&self.conf, &startup)?;
        self.wait_ready(&startup)
    }

    /// The protocol log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Writes a file below the root, owned by the FTP user.
    pub fn seed(&self, rel: &str, data: &[u8]) -> Result<PathBuf> {
        seed(&self.user, &self.root, rel, data)
    }
}

fn seed(user: &TestUser, root: &Path, rel: &str, data: &[u8]) -> Result<PathBuf> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(&path, data)?;
    user.chown(root)?;
    Ok(path)
}

/// A running OpenSSH sshd on 127.0.0.1 that serves only SFTP to its own user.
pub struct Sshd {
    // Dropped first, see `Vsftpd`.
    proc_: Proc,
    /// SSH port.
    pub port: u16,
    /// The SFTP user (password login works too).
    pub user: TestUser,
    /// The folder SFTP sessions start in (an absolute server path: the partner root).
    pub root: PathBuf,
    /// The host's public key line (`ssh-ed25519 AAAA...`), for pinning.
    pub host_key: String,
    /// An Ed25519 client key accepted for the user (OpenSSH format, no passphrase).
    pub client_key: PathBuf,
    /// An RSA client key accepted for the user, encrypted with [`Sshd::rsa_passphrase`].
    pub client_rsa_key: PathBuf,
    /// The passphrase of the RSA key.
    pub rsa_passphrase: String,
    /// An Ed25519 public key line that is not the server's host key (for refusal tests).
    pub other_host_key: String,
    conf: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

fn keygen(path: &Path, kind: &str, passphrase: &str) -> Result<String> {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", passphrase, "-C", "wharf-test", "-f"])
        .arg(path))?;
    let public = PathBuf::from(format!("{}.pub", path.display()));
    Ok(fs::read_to_string(&public)
        .with_context(|| format!("reading {}", public.display()))?
        .trim()
        .to_owned())
}

impl Sshd {
    /// Installs (if needed) and starts sshd.
    pub fn start() -> Result<Self> {
        Self::start_with(None)
    }

    /// [`Sshd::start`], with every SFTP request the server handles written
    /// to a log ([`Sshd::requests`]) in the order it handled them.
    pub fn start_logging_requests() -> Result<Self> {
        Self::start_with(Some("DEBUG3"))
    }

    fn start_with(sftp_log_level: Option<&str>) -> Result<Self> {
        ensure_installed()?;
        fs::create_dir_all("/run/sshd")?;
        let dir = tempfile::Builder::new().prefix("wharf-sshd-").tempdir()?;
        let root = make_dirs(dir.path())?;
        let user = TestUser::create(&root)?;
        user.chown(&root)?;
        let keys = dir.path().join("keys");
        fs::create_dir_all(&keys)?;
        let host_key = keygen(&keys.join("host.key"), "ed25519", "")?;
        let other_host_key = keygen(&keys.join("other.key"), "ed25519", "")?;
        let client_pub = keygen(&keys.join("client.key"), "ed25519", "")?;
        let rsa_passphrase = "rsa passphrase for tests".to_owned();
        let rsa_pub = keygen(&keys.join("client_rsa.key"), "rsa", &rsa_passphrase)?;
        let auth = dir.path().join("authorized");
        fs::create_dir_all(&auth)?;
        fs::write(auth.join(&user.name), format!("{client_pub}\n{rsa_pub}\n"))?;
        let port = free_port();
        let log = dir.path().join("sshd.log");
        // Written by the user's sessions (see `start_logging_requests`).
        let requests = dir.path().join("requests.log");
        fs::write(&requests, "")?;
        user.chown(&requests)?;
        let conf = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {pid}\n\
             AuthorizedKeysFile {auth}/%u\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication yes\nKbdInteractiveAuthentication no\n\
             AllowUsers {u}\nMaxStartups 100:30:200\nMaxSessions 50\n\
             Subsystem sftp internal-sftp\nMatch User {u}\n  ForceCommand {sftp} -d {root}\n",
            hk = keys.join("host.key").display(),
            pid = dir.path().join("sshd.pid").display(),
            auth = auth.display(),
            u = user.name,
            root = root.display(),
            // The logging server runs as its own process, through the
            // user's shell, its log (`-e`: standard error, not syslog)
            // appended to `requests.log`.
            sftp = match sftp_log_level {
                Some(level) => format!(
                    "/usr/lib/openssh/sftp-server -e -l {level} 2>>{}",
                    requests.display()
                ),
                None => "internal-sftp".to_owned(),
            },
        );
        let conf_path = dir.path().join("sshd_config");
        fs::write(&conf_path, conf)?;
        let proc_ = Self::spawn(&conf_path, &log)?;
        let mut server = Self {
            port,
            user,
            root,
            host_key,
            client_key: keys.join("client.key"),
            client_rsa_key: keys.join("client_rsa.key"),
            rsa_passphrase,
            other_host_key,
            conf: conf_path,
            log,
            proc_,
            dir,
        };
        wait_for_banner(server.port, "SSH-2.0", &server.log, &mut server.proc_)?;
        Ok(server)
    }

    fn spawn(conf: &Path, log: &Path) -> Result<Proc> {
        Proc::spawn(
            Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(conf)
                .arg("-E")
                .arg(log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.proc_.pid()
    }

    /// Kills sshd and all its sessions (as a crash would).
    pub fn kill(&mut self) {
        self.proc_.kill();
    }

    /// Starts sshd again with the same settings and keys.
    pub fn restart(&mut self) -> Result<()> {
        self.proc_.kill();
        self.proc_ = Self::spawn(&self.conf, &self.log)?;
        wait_for_banner(self.port, "SSH-2.0", &self.log, &mut self.proc_)
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The SFTP requests handled so far, in order, one per line (started by
    /// [`Sshd::start_logging_requests`]; empty otherwise).
    pub fn requests(&self) -> String {
        fs::read_to_string(self.log.with_file_name("requests.log")).unwrap_or_default()
    }

    /// Writes a file below the root, owned by the SFTP user.
    pub fn seed(&self, rel: &str, data: &[u8]) -> Result<PathBuf> {
        seed(&self.user, &self.root, rel, data)
    }

    /// A known_hosts file naming this server's key (as `[127.0.0.1]:port`).
    pub fn known_hosts(&self) -> Result<PathBuf> {
        let p = self.dir.path().join("known_hosts");
        fs::write(&p, format!("[127.0.0.1]:{} {}\n", self.port, self.host_key))?;
        Ok(p)
    }
}

/// Peak resident memory of this process so far (VmHWM), in bytes.
pub fn peak_rss_bytes() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Resets the peak-RSS counter (Linux: write 5 to /proc/self/clear_refs), so a measurement
/// covers only what follows. Returns whether the kernel accepted it.
pub fn reset_peak_rss() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A command running `program`, prefixed by the words of `WHARF_BENCH_WRAP`
/// when it is set (e.g. `perf record -g -o wharf.perf --`), so a benchmark's
/// measured child can be profiled on its own.
pub fn wrapped(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let wrap = std::env::var("WHARF_BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    match words.next() {
        Some(first) => {
            let mut cmd = std::process::Command::new(first);
            cmd.args(words).arg(program);
            cmd
        }
        None => std::process::Command::new(program),
    }
}
