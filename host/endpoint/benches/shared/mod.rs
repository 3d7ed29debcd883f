//! What the benchmarks share: the SFTP endpoint and the rclone remote for one test sshd.

use wharf_endpoint::CommonConfig;
use wharf_endpoint::sftp::{SftpAuth, SftpConfig};
use wharf_tests::servers::Sshd;

/// The endpoint configuration for `ssh`: key login, its host key pinned, its root.
pub fn sftp_config(ssh: &Sshd, common: CommonConfig) -> SftpConfig {
    let mut c = SftpConfig::new(
        "127.0.0.1",
        ssh.port,
        ssh.user.name.clone(),
        SftpAuth::Key {
            path: ssh.client_key.clone(),
            passphrase: None,
        },
    );
    c.host_keys = vec![ssh.host_key.clone()];
    c.root = ssh.root.display().to_string();
    c.common = common;
    c
}

/// An rclone.conf section for `ssh` as the remote `sftp`: the same key, the host key
/// checked against its known_hosts, no remote hashing (rclone would ask a shell for it).
pub fn rclone_sftp_section(ssh: &Sshd) -> String {
    format!(
        "[sftp]\ntype = sftp\nhost = 127.0.0.1\nport = {}\nuser = {}\nkey_file = {}\n\
         known_hosts_file = {}\ndisable_hashcheck = true\nshell_type = none\n",
        ssh.port,
        ssh.user.name,
        ssh.client_key.display(),
        ssh.known_hosts().unwrap().display(),
    )
}
