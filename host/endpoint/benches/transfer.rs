//! Download benchmark: 1,000 × 10 KiB files and one large file from a real vsftpd and a real
//! sshd on 127.0.0.1 into a local folder, with wharf's endpoints and, in the same run and
//! from the same servers, `rclone copy` (and `curl` for the large file).
//!
//! Run: `cargo bench -p wharf-endpoint --bench transfer` (as root: it installs and starts the
//! servers). `WHARF_BENCH_LARGE_MIB` sets the large file's size (default 1024),
//! `WHARF_BENCH_REPS` the number of rounds whose median is printed (default 3).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use wharf_endpoint::ftp::{FtpConfig, FtpEndpoint, FtpSecurity};
use wharf_endpoint::local::LocalEndpoint;
use wharf_endpoint::sftp::SftpEndpoint;
use wharf_endpoint::{CommonConfig, Endpoint, EntryKind, RemotePath, SecretSource, TempNaming};
use wharf_tests::bench::env_number;
use wharf_tests::servers::{FtpTls, Sshd, Vsftpd, VsftpdOptions, peak_rss_bytes, reset_peak_rss};

mod shared;

const SMALL_FILES: usize = 1000;
const SMALL_SIZE: usize = 10 * 1024;
/// Parallel transfers, for wharf and rclone alike.
const TRANSFERS: usize = 4;

#[derive(Clone, Copy)]
struct Row {
    server: &'static str,
    tool: &'static str,
    what: &'static str,
    secs: f64,
    files: usize,
    bytes: u64,
    rss: u64,
}

impl Row {
    fn files_per_s(&self) -> f64 {
        self.files as f64 / self.secs
    }
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
}

/// One row per (server, workload, tool): the median time over the rounds, the largest RSS.
fn median_rows(rows: Vec<Row>) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    for r in &rows {
        if out
            .iter()
            .any(|o| (o.server, o.what, o.tool) == (r.server, r.what, r.tool))
        {
            continue;
        }
        let same: Vec<&Row> = rows
            .iter()
            .filter(|o| (o.server, o.what, o.tool) == (r.server, r.what, r.tool))
            .collect();
        let mut secs: Vec<f64> = same.iter().map(|o| o.secs).collect();
        secs.sort_by(f64::total_cmp);
        out.push(Row {
            secs: secs[secs.len() / 2],
            rss: same.iter().map(|o| o.rss).max().unwrap_or(0),
            ..*r
        });
    }
    out
}

fn seed(root: &Path, owner: &str, large: u64) {
    let small = root.join("small");
    std::fs::create_dir_all(&small).unwrap();
    for i in 0..SMALL_FILES {
        let data: Vec<u8> = (0..SMALL_SIZE)
            .map(|j| ((i * 31 + j * 7) % 251) as u8)
            .collect();
        std::fs::write(small.join(format!("f{i:04}.dat")), data).unwrap();
    }
    let big = root.join("large");
    std::fs::create_dir_all(&big).unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(big.join("big.bin")).unwrap());
    let chunk: Vec<u8> = (0..1 << 20)
        .map(|j: u32| (j.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for _ in 0..large / (1 << 20) {
        std::io::Write::write_all(&mut f, &chunk).unwrap();
    }
    drop(f);
    let st = Command::new("chown")
        .args(["-R", owner])
        .arg(root)
        .status()
        .unwrap();
    assert!(st.success());
}

fn fresh_dir(base: &Path, name: &str) -> PathBuf {
    let d = base.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn dir_bytes(d: &Path) -> (usize, u64) {
    let mut n = 0;
    let mut b = 0;
    for e in std::fs::read_dir(d).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            n += 1;
            b += e.metadata().unwrap().len();
        }
    }
    (n, b)
}

async fn wharf_small(ep: Arc<dyn Endpoint>, dst: &Path, sync: bool) -> (f64, u64) {
    let local = Arc::new(
        LocalEndpoint::open(dst, TempNaming::default())
            .unwrap()
            .with_sync(sync),
    );
    reset_peak_rss();
    let t = Instant::now();
    let entries = ep.list(&RemotePath::parse("small").unwrap()).await.unwrap();
    let files: Vec<_> = entries
        .into_iter()
        .filter(|e| e.kind == EntryKind::File)
        .collect();
    assert_eq!(files.len(), SMALL_FILES);
    futures::stream::iter(files)
        .map(|e| {
            let ep = ep.clone();
            let local = local.clone();
            async move {
                let r = ep.open_read(&e.path, 0).await.unwrap();
                let to = RemotePath::parse(&e.name).unwrap();
                let mut r = tokio::io::BufReader::with_capacity(wharf_endpoint::io::COPY_BUF, r);
                local.write_atomic(&to, &mut r, None).await.unwrap();
            }
        })
        .buffer_unordered(TRANSFERS)
        .collect::<Vec<()>>()
        .await;
    (t.elapsed().as_secs_f64(), peak_rss_bytes())
}

async fn wharf_large(ep: Arc<dyn Endpoint>, dst: &Path, sync: bool) -> (f64, u64) {
    reset_peak_rss();
    let t = Instant::now();
    let remote = RemotePath::parse("large/big.bin").unwrap();
    let size = ep
        .stat(&remote)
        .await
        .unwrap()
        .expect("large file exists")
        .size;
    // Ranges in parallel into a temporary name, then renamed into place, as
    // rclone's multi-thread download does (4 streams by default).
    // Durably: whole chunks written with direct I/O, the file fsynced.
    let temp = dst.join(".big.bin.part");
    if sync {
        wharf_endpoint::download_durable(ep.as_ref(), &remote, size, &temp, TRANSFERS)
            .await
            .unwrap();
    } else {
        wharf_endpoint::download_segmented(ep.as_ref(), &remote, size, &temp, TRANSFERS)
            .await
            .unwrap();
    }
    tokio::fs::rename(&temp, dst.join("big.bin")).await.unwrap();
    (t.elapsed().as_secs_f64(), peak_rss_bytes())
}

/// Runs a peer tool and returns (seconds, the child's peak RSS).
// The child is reaped with wait4 (which also reports its peak RSS), not Child::wait.
#[allow(clippy::zombie_processes)]
fn timed(cmd: &mut Command) -> (f64, u64) {
    let t = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter; wait4 reaps our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let secs = t.elapsed().as_secs_f64();
    assert!(
        r > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed"
    );
    (secs, usage.ru_maxrss as u64 * 1024)
}

/// The base64 SHA-256 of a host key line, as `ssh-keygen -l` prints it (without `SHA256:`).
fn host_sha256(line: &str) -> String {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), line).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(f.path())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let fp = text.split_whitespace().nth(1).unwrap();
    fp.trim_start_matches("SHA256:").to_owned()
}

fn obscure(pw: &str) -> String {
    let out = Command::new("rclone")
        .args(["obscure", pw])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn common() -> CommonConfig {
    CommonConfig {
        max_connections: TRANSFERS,
        stall_timeout: Duration::from_secs(60),
        ..Default::default()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let large_mib: u64 = env_number("WHARF_BENCH_LARGE_MIB", 1024);
    let large = large_mib << 20;
    let ftp = Vsftpd::start(VsftpdOptions {
        tls: FtpTls::None,
        max_per_ip: 50,
        ..Default::default()
    })
    .expect("vsftpd");
    let ftps = Vsftpd::start(VsftpdOptions {
        tls: FtpTls::Explicit,
        ..Default::default()
    })
    .expect("vsftpd with TLS");
    let ssh = Sshd::start().expect("sshd");
    seed(&ftp.root, &ftp.user.name, large);
    seed(&ftps.root, &ftps.user.name, large);
    seed(&ssh.root, &ssh.user.name, large);
    let work = tempfile::tempdir().unwrap();
    let pwfile = work.path().join("ftp.pw");
    std::fs::write(&pwfile, &ftp.user.password).unwrap();

    let mut fc = FtpConfig::new(
        "127.0.0.1",
        ftp.port,
        ftp.user.name.clone(),
        SecretSource::File(pwfile.clone()),
    );
    fc.security = FtpSecurity::Plain;
    fc.common = common();
    let ftp_ep: Arc<dyn Endpoint> = Arc::new(FtpEndpoint::new(fc).unwrap());

    let ftps_pw = work.path().join("ftps.pw");
    std::fs::write(&ftps_pw, &ftps.user.password).unwrap();
    let ca = &ftps.ca.as_ref().expect("TLS server has a CA").ca_pem;
    let mut fc = FtpConfig::new(
        "127.0.0.1",
        ftps.port,
        ftps.user.name.clone(),
        SecretSource::File(ftps_pw),
    );
    fc.security = FtpSecurity::Explicit;
    fc.tls.ca_file = Some(ca.clone());
    fc.common = common();
    let ftps_ep: Arc<dyn Endpoint> = Arc::new(FtpEndpoint::new(fc).unwrap());

    let sftp_ep: Arc<dyn Endpoint> =
        Arc::new(SftpEndpoint::new(shared::sftp_config(&ssh, common())).unwrap());

    let rconf = work.path().join("rclone.conf");
    std::fs::write(
        &rconf,
        format!(
            "[ftp]\ntype = ftp\nhost = 127.0.0.1\nport = {}\nuser = {}\npass = {}\nconcurrency = {}\n\n\
             [ftps]\ntype = ftp\nhost = 127.0.0.1\nport = {}\nuser = {}\npass = {}\nconcurrency = {}\n\
             explicit_tls = true\nno_check_certificate = true\ndisable_tls13 = true\n\n{}",
            ftp.port,
            ftp.user.name,
            obscure(&ftp.user.password),
            TRANSFERS + 8 + 2,
            ftps.port,
            ftps.user.name,
            obscure(&ftps.user.password),
            TRANSFERS + 8 + 2,
            shared::rclone_sftp_section(&ssh),
        ),
    )
    .unwrap();
    let rclone = |remote: &str, dst: &Path| {
        let mut c = Command::new("rclone");
        c.arg("copy")
            .arg(remote)
            .arg(dst)
            .args(["--config"])
            .arg(&rconf)
            .args([
                "--transfers",
                &TRANSFERS.to_string(),
                "--checkers",
                "8",
                "-q",
            ])
            // One stream per file, as wharf and curl do (rclone's multi-thread FTP download
            // cuts data connections short, which vsftpd reports as failed transfers).
            .args(["--multi-thread-streams", "0"]);
        c
    };

    let reps: usize = env_number("WHARF_BENCH_REPS", 3).max(1);
    let mut rows = Vec::new();
    let sftp_root = ssh.root.display().to_string();
    // Rounds alternate the tools on a shared machine; the median round is reported.
    let rounds = (0..reps).flat_map(|_| {
        [
            ("ftp", ftp_ep.clone()),
            ("ftps", ftps_ep.clone()),
            ("sftp", sftp_ep.clone()),
        ]
    });
    for (server, ep) in rounds {
        // Small files: wharf with fsync per file (its default), then without.
        for (tool, sync) in [("wharf", true), ("wharf*", false)] {
            let d = fresh_dir(work.path(), "w-small");
            let (secs, rss) = wharf_small(ep.clone(), &d, sync).await;
            let (files, bytes) = dir_bytes(&d);
            assert_eq!(files, SMALL_FILES);
            rows.push(Row {
                server,
                tool,
                what: "1000 x 10 KiB",
                secs,
                files,
                bytes,
                rss,
            });
        }
        let d = fresh_dir(work.path(), "r-small");
        let (secs, rss) = timed(&mut rclone(&format!("{server}:small"), &d));
        let (files, bytes) = dir_bytes(&d);
        assert_eq!(files, SMALL_FILES);
        rows.push(Row {
            server,
            tool: "rclone",
            what: "1000 x 10 KiB",
            secs,
            files,
            bytes,
            rss,
        });

        // The large file.
        for (tool, sync) in [("wharf", true), ("wharf*", false)] {
            let d = fresh_dir(work.path(), "w-large");
            let (secs, rss) = wharf_large(ep.clone(), &d, sync).await;
            let (files, bytes) = dir_bytes(&d);
            assert_eq!(bytes, large);
            rows.push(Row {
                server,
                tool,
                what: "1 large file",
                secs,
                files,
                bytes,
                rss,
            });
        }
        let d = fresh_dir(work.path(), "r-large");
        let (secs, rss) = timed(&mut rclone(&format!("{server}:large"), &d));
        let (files, bytes) = dir_bytes(&d);
        assert_eq!(bytes, large);
        rows.push(Row {
            server,
            tool: "rclone",
            what: "1 large file",
            secs,
            files,
            bytes,
            rss,
        });
        let d = fresh_dir(work.path(), "c-large");
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--fail", "-o"]).arg(d.join("big.bin"));
        if server == "ftps" {
            curl.arg(format!("ftp://127.0.0.1:{}/large/big.bin", ftps.port))
                .args(["--ssl-reqd", "--cacert"])
                .arg(ca)
                .arg("-u")
                .arg(format!("{}:{}", ftps.user.name, ftps.user.password));
        } else if server == "ftp" {
            curl.arg(format!("ftp://127.0.0.1:{}/large/big.bin", ftp.port))
                .arg("-u")
                .arg(format!("{}:{}", ftp.user.name, ftp.user.password));
        } else {
            curl.arg(format!(
                "sftp://127.0.0.1:{}{}/large/big.bin",
                ssh.port, sftp_root
            ))
            .arg("-u")
            .arg(format!("{}:", ssh.user.name))
            .arg("--key")
            .arg(&ssh.client_key)
            .arg("--pubkey")
            .arg(format!("{}.pub", ssh.client_key.display()))
            .arg("--hostpubsha256")
            .arg(host_sha256(&ssh.host_key));
        }
        let (secs, rss) = timed(&mut curl);
        let (files, bytes) = dir_bytes(&d);
        assert_eq!(bytes, large);
        rows.push(Row {
            server,
            tool: "curl",
            what: "1 large file",
            secs,
            files,
            bytes,
            rss,
        });
    }

    let rows = median_rows(rows);
    println!(
        "\n{:<5} {:<14} {:<7} {:>9} {:>10} {:>9} {:>13}",
        "proto", "workload", "tool", "files/s", "MB/s", "peak RSS", "vs rclone"
    );
    for r in &rows {
        let base = rows
            .iter()
            .find(|b| b.server == r.server && b.what == r.what && b.tool == "rclone")
            .unwrap();
        let ratio = if r.what.starts_with("1000") {
            r.files_per_s() / base.files_per_s()
        } else {
            r.mb_per_s() / base.mb_per_s()
        };
        let files_per_s = if r.files > 1 {
            format!("{:.0}", r.files_per_s())
        } else {
            "-".to_owned()
        };
        println!(
            "{:<5} {:<14} {:<7} {:>9} {:>10.1} {:>6.1} MiB {:>12.2}x",
            r.server,
            r.what,
            r.tool,
            files_per_s,
            r.mb_per_s(),
            r.rss as f64 / 1048576.0,
            ratio
        );
    }
    println!(
        "\n(median of {reps} rounds; wharf peak RSS is this whole process's high-water mark, reset before each run; \
         {TRANSFERS} parallel transfers for wharf and rclone; large file {large_mib} MiB;\n \
         wharf fsyncs each file before renaming it into place (the large one written with direct I/O), wharf* does not, like rclone and curl;\n \
         over FTPS wharf and curl verify the throwaway CA, rclone skips verification)"
    );
}
