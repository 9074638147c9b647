//! `cram bench --gpus N`: its flags and errors (CPU), and the world-size-1
//! path through the binary (GPU only: `#[ignore]`d here).
//!
//! On the GPU machine, which has no Rust, carry this test binary
//! (`target/release/deps/bench_gpus-*`) with `target/release/cram` and name
//! the latter in `CRAM_BIN`: the path compiled into the test is the build
//! machine's.

mod common;

use common::cram_env as cram;

fn assert_one_error((code, out, err): (i32, String, String), needles: &[&str]) {
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "an error prints no result: {out}");
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one sentence: {err}");
    for needle in needles {
        assert!(err.contains(needle), "expected '{needle}' in: {err}");
    }
}

fn no_driver() -> bool {
    cram::backend::cuda::libraries_present().is_err()
}

#[test]
fn gpus_without_a_gpu_is_todays_error() {
    if !no_driver() {
        eprintln!("skipping: this machine has the CUDA driver");
        return;
    }
    assert_one_error(
        cram(&["bench", "--gpus", "2", "--steps", "1"], &[]),
        &["cram bench", "no CUDA driver"],
    );
}

#[test]
fn gpus_needs_a_count() {
    assert_one_error(
        cram(&["bench", "--gpus", "0"], &[]),
        &["--gpus needs at least 1"],
    );
}

#[test]
fn zero1_needs_ranks() {
    assert_one_error(cram(&["bench", "--zero1"], &[]), &["--zero1", "--gpus"]);
}

#[test]
fn profile_is_for_one_gpu() {
    assert_one_error(
        cram(&["bench", "--gpus", "2", "--profile"], &[]),
        &["--profile"],
    );
}

#[test]
fn gpus_under_a_launcher_is_refused() {
    let env = [
        ("RANK", "0"),
        ("WORLD_SIZE", "2"),
        ("LOCAL_RANK", "0"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "29999"),
    ];
    assert_one_error(
        cram(&["bench", "--gpus", "2"], &env),
        &["--gpus", "launcher"],
    );
}

#[test]
fn a_bad_preset_fails_before_any_worker_starts() {
    let (code, _, err) = cram(&["bench", "--gpus", "2", "--preset", "no-such"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no-such"), "{err}");
    assert!(!err.contains("rank"), "no worker was started: {err}");
}

/// The whole `--gpus 1` path: rank 0's baseline, the launch of one worker,
/// the rendezvous, NCCL's set-up, the device reducer, the line.
#[test]
#[ignore = "needs a CUDA GPU and NCCL"]
fn one_gpu_group_prints_a_scaling_line() {
    for zero1 in [false, true] {
        let mut args = vec![
            "bench",
            "--gpus",
            "1",
            "--preset",
            "tiny",
            "--micro-batch",
            "16,32",
            "--seq-len",
            "64",
            "--steps",
            "3",
            "--warmup",
            "1",
            "--dist-timeout",
            "120",
        ];
        if zero1 {
            args.push("--zero1");
        }
        let (code, out, err) = cram(&args, &[]);
        assert_eq!(code, 0, "{err}");
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        println!("{out}{err}");
        assert_eq!(lines.len(), 2, "one line per configuration: {out}");
        for (line, mb) in lines.iter().zip([16, 32]) {
            assert_eq!(line["gpus"], 1);
            assert_eq!(line["zero1"], zero1);
            assert_eq!(line["mb"], mb);
            assert_eq!(line["global_batch"], mb);
            assert_eq!(line["steps"], 3);
            let rate = line["tokens_per_s"].as_f64().unwrap();
            let one = line["one_gpu_tokens_per_s"].as_f64().unwrap();
            let eff = line["scaling_efficiency"].as_f64().unwrap();
            assert!(rate > 0.0 && one > 0.0, "{line}");
            assert!((eff - rate / one).abs() < 1e-9 * eff, "{line}");
            assert!(line["loss"].as_f64().unwrap().is_finite(), "{line}");
        }
    }
}
