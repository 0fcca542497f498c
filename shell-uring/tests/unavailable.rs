//! The binary itself: it starts (io_uring works on the test machine) and speaks the
//! same command line as `ringkv-node`. Its serving behaviour is tested by the
//! real-process suite in shell-mio/tests, which runs every test against both binaries.

use std::process::Command;

#[test]
fn the_binary_takes_the_same_command_line_as_ringkv_node() {
    let output = Command::new(env!("CARGO_BIN_EXE_ringkv-node-uring"))
        .arg("--help")
        .output()
        .expect("run ringkv-node-uring");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{help}");
    for flag in [
        "--client-address",
        "--members",
        "--seeds",
        "--durability",
        "dev",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_ringkv-node-uring"))
        .arg("--no-such-flag")
        .output()
        .expect("run ringkv-node-uring");
    assert!(!output.status.success());
}
