//! Upload benchmark: one large file to a real sshd on 127.0.0.1 through the SFTP endpoint's
//! `write_atomic` (temporary name, fsync, size check, rename), with write-behind (syncs on
//! the way, every [`DEFAULT_SYNC_EVERY`] bytes, the default) and without it
//! (`sync_every = 0`), in alternating rounds; also with `rclone copyto` of the same bytes
//! from a local file, which neither syncs nor renames.
//!
//! Run: `cargo bench -p wharf-endpoint --bench upload` (as root: it installs and starts the
//! server). `WHARF_BENCH_LARGE_MIB` sets the file's size (default 1024), `WHARF_BENCH_REPS`
//! the number of rounds whose median is printed (default 5).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use wharf_endpoint::io::COPY_BUF;
use wharf_endpoint::sftp::{DEFAULT_SYNC_EVERY, SftpConfig, SftpEndpoint};
use wharf_endpoint::{CommonConfig, Endpoint, RemotePath};
use wharf_tests::bench::env_number;
use wharf_tests::servers::Sshd;

mod shared;

/// The byte every uploaded position holds: the source costs nothing to produce.
const FILL: u8 = 0x5a;

fn config(ssh: &Sshd, sync_every: u64) -> SftpConfig {
    let common = CommonConfig {
        stall_timeout: Duration::from_secs(120),
        ..Default::default()
    };
    SftpConfig {
        sync_every,
        ..shared::sftp_config(ssh, common)
    }
}

/// Uploads `size` bytes as `big.bin` and returns the seconds it took, after checking the
/// server holds all of them under the final name; then deletes it.
async fn upload(ssh: &Sshd, sync_every: u64, size: u64) -> f64 {
    let ep = SftpEndpoint::new(config(ssh, sync_every)).unwrap();
    let mut src = tokio::io::BufReader::with_capacity(COPY_BUF, tokio::io::repeat(FILL).take(size));
    let path = RemotePath::parse("big.bin").unwrap();
    let started = Instant::now();
    let sent = ep.write_atomic(&path, &mut src, None).await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(sent, size);
    let on_server = ssh.root.join("big.bin");
    assert_eq!(std::fs::metadata(&on_server).unwrap().len(), size);
    std::fs::remove_file(on_server).unwrap();
    secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let mib: u64 = env_number("WHARF_BENCH_LARGE_MIB", 1024);
    let reps: usize = env_number("WHARF_BENCH_REPS", 5).max(1);
    let size = mib << 20;
    let ssh = Sshd::start().expect("sshd");
    // A sync costs nothing on a file system in memory: the comparison then means nothing.
    let fs = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(&ssh.root)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("big.bin");
    std::fs::write(&local, vec![FILL; size as usize]).unwrap();
    let rconf = work.path().join("rclone.conf");
    std::fs::write(&rconf, shared::rclone_sftp_section(&ssh)).unwrap();
    let rclone = || {
        let started = Instant::now();
        let status = Command::new("rclone")
            .arg("copyto")
            .arg(&local)
            .arg(format!("sftp:{}/big.bin", ssh.root.display()))
            .arg("--config")
            .arg(&rconf)
            .arg("-q")
            .stdin(Stdio::null())
            .status()
            .expect("rclone runs");
        let secs = started.elapsed().as_secs_f64();
        assert!(status.success(), "rclone failed");
        std::fs::remove_file(ssh.root.join("big.bin")).unwrap();
        secs
    };

    // A first upload of each kind, not counted: the server's and the page cache's warm-up.
    upload(&ssh, DEFAULT_SYNC_EVERY, size).await;
    upload(&ssh, 0, size).await;
    let (mut behind, mut plain, mut rcl) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..reps {
        // Alternate which goes first, so neither always follows the other.
        let order = if round % 2 == 0 {
            [DEFAULT_SYNC_EVERY, 0]
        } else {
            [0, DEFAULT_SYNC_EVERY]
        };
        for every in order {
            let secs = upload(&ssh, every, size).await;
            if every == 0 { &mut plain } else { &mut behind }.push(secs);
        }
        rcl.push(rclone());
        eprintln!(
            "round {}: write-behind {:.2} s, without {:.2} s, rclone {:.2} s",
            round + 1,
            behind[round],
            plain[round],
            rcl[round]
        );
    }
    let (b, p, r) = (median(behind), median(plain), median(rcl));
    let mb = size as f64 / 1e6;
    println!(
        "\nSFTP upload of {mib} MiB to {} (file system: {fs}), median of {reps} rounds:",
        ssh.root.display()
    );
    if fs == "tmpfs" || fs == "ramfs" {
        println!(
            "  (a file system in memory: syncs cost nothing here, so neither does their absence)"
        );
    }
    println!(
        "  wharf, write-behind every {} MiB  {b:>6.2} s  {:>7.1} MB/s  {:>5.2}x rclone",
        DEFAULT_SYNC_EVERY >> 20,
        mb / b,
        r / b
    );
    println!(
        "  wharf, without write-behind      {p:>6.2} s  {:>7.1} MB/s  {:>5.2}x rclone",
        mb / p,
        r / p
    );
    println!(
        "  rclone copyto                    {r:>6.2} s  {:>7.1} MB/s",
        mb / r
    );
    println!(
        "(wharf: temporary name, fsync, size check, rename; rclone: straight to the name, no fsync)"
    );
}
