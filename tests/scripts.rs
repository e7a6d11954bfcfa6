//! The scripts a newcomer runs: `scripts/e2e-bench.sh` on a few thousand
//! frames exits 0, prints its figures and leaves no temporary directory.

use std::process::Command;

#[test]
fn e2e_bench_exits_zero_and_cleans_up() {
    let tmp = std::env::temp_dir().join(format!("meridian-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/e2e-bench.sh");
    let out = Command::new("timeout")
        .args(["120", "bash", script, "3000"])
        .env("MERIDIAN_BIN", env!("CARGO_BIN_EXE_meridian-pipeline"))
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "serve / relay:",
        "read-to-delivered (station ACK) at half load",
    ] {
        assert!(stdout.contains(needle), "no {needle:?} in:\n{stdout}");
    }
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    std::fs::remove_dir_all(&tmp).unwrap();
}
