//! Disk full on a real filesystem: the probe binary fills a 12 MiB tmpfs mounted in a
//! private user and mount namespace (`unshare -rm`, so no root is needed where user
//! namespaces are allowed, and nothing is mounted on the host).

use std::process::Command;

#[test]
fn a_full_disk_refuses_writes_cleanly_keeps_every_acknowledged_write_and_recovers() {
    let probe = env!("CARGO_BIN_EXE_storage-disk-full-probe");
    let mount_point = tempfile::tempdir().unwrap();
    let script = r#"mount -t tmpfs -o size=12m ringkv-test "$1" && exec "$2" "$1""#;
    let output = Command::new("unshare")
        .args(["-rm", "sh", "-c", script, "sh"])
        .arg(mount_point.path())
        .arg(probe)
        .output()
        .expect("unshare (util-linux) must be installed to run this test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}{stderr}");
    assert!(
        output.status.success(),
        "probe failed ({}): {stdout}{stderr}",
        output.status
    );
    for stage in [
        "refused with DiskFull",
        "while full: all",
        "reopened while full: all",
        "space returned: writes accepted again",
        "final reopen: all",
        "disk full probe: passed",
    ] {
        assert!(
            stdout.contains(stage),
            "missing stage {stage:?} in:\n{stdout}"
        );
    }
}
