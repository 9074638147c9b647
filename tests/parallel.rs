//! Data parallelism on the CPU: the in-process collectives, N ranks as
//! threads against one process with the same global batch (plain and ZeRO-1),
//! and resuming a 4-rank ZeRO-1 checkpoint on 1 and 3 ranks.

mod common;

use cram::config::Config;
use cram::data::TokenStore;
use cram::model::Model;
use cram::parallel::{micro_range, CommError, Communicator, Shard, ThreadComm};
use cram::train::{checkpoint, fit_to_data, pretrain, read_without_timing, Record, RunOptions};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- collectives

/// Runs `f(comm)` on every rank of a group of `n` threads.
fn on_ranks<T: Send>(comms: Vec<ThreadComm>, f: impl Fn(&ThreadComm) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .into_iter()
            .map(|c| {
                let f = &f;
                s.spawn(move || f(&c))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn collectives_give_rank_ordered_results() {
    let n = 3;
    let out = on_ranks(ThreadComm::group(n), |c| {
        let r = c.rank() as f32;
        // Values whose f32 sum depends on the order: 1e8 + 1 − 1e8.
        let mut a = vec![[1e8f32, 1.0, -1e8][c.rank()], r + 1.0];
        c.all_reduce_sum(&mut a).unwrap();
        let input: Vec<f32> = (0..2 * n).map(|i| i as f32 * 10.0 + r).collect();
        let mut rs = vec![0.0; 2];
        c.reduce_scatter_sum(&input, &mut rs).unwrap();
        let mut ag = vec![0.0; 2 * n];
        c.all_gather(&[r, -r], &mut ag).unwrap();
        let mut b = vec![r; 4];
        c.broadcast(&mut b, 2).unwrap();
        c.barrier().unwrap();
        (a, rs, ag, b)
    });
    for (rank, (a, rs, ag, b)) in out.iter().enumerate() {
        // ((1e8 + 1) − 1e8) in f32 is 0: the sum runs in rank order on every rank.
        assert_eq!(a, &vec![0.0, 6.0], "rank {rank}");
        let want: Vec<f32> = (0..2)
            .map(|j| ((rank * 2 + j) as f32 * 10.0) * 3.0 + 3.0)
            .collect();
        assert_eq!(rs, &want, "rank {rank}");
        assert_eq!(ag, &vec![0.0, -0.0, 1.0, -1.0, 2.0, -2.0], "rank {rank}");
        assert_eq!(b, &vec![2.0; 4], "rank {rank}");
    }
}

#[test]
fn a_missing_rank_times_out_with_its_name() {
    let timeout = Duration::from_millis(300);
    let comms = ThreadComm::group_with_timeout(3, timeout);
    let start = Instant::now();
    let out = on_ranks(comms, |c| {
        if c.rank() == 1 {
            // Hangs (does not leave) past the others' timeout.
            std::thread::sleep(Duration::from_millis(900));
            return None;
        }
        let mut x = [1.0f32];
        Some(c.all_reduce_sum(&mut x))
    });
    assert!(start.elapsed() < Duration::from_secs(5));
    for r in [0, 2] {
        let err = out[r].clone().unwrap().unwrap_err();
        let msg = err.to_string();
        // The first to give up names rank 1; the other reports the failed group.
        assert!(msg.contains("rank 1"), "rank {r}: {msg}");
    }
    let timeouts = [0, 2]
        .iter()
        .filter(|&&r| {
            matches!(out[r].clone().unwrap(), Err(CommError::Timeout { ref missing, .. }) if missing == &vec![1])
        })
        .count();
    assert!(timeouts >= 1, "{out:?}");
}

#[test]
fn a_rank_that_leaves_is_named_at_once() {
    let comms = ThreadComm::group_with_timeout(2, Duration::from_secs(30));
    let start = Instant::now();
    let out = on_ranks(comms, |c| {
        if c.rank() == 0 {
            return None; // returns: its communicator drops, as when a rank dies
        }
        c.barrier().err()
    });
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "did not wait out the timeout"
    );
    let err = out[1].clone().unwrap();
    assert!(matches!(err, CommError::PeerGone { ref missing, .. } if missing == &vec![0]));
    assert!(err.to_string().contains("rank 0 left the group"), "{err}");
}

#[test]
fn mismatched_collectives_are_reported() {
    let out = on_ranks(ThreadComm::group(2), |c| {
        let mut x = vec![1.0f32; 1 + c.rank()];
        c.all_reduce_sum(&mut x).err()
    });
    let errs: Vec<String> = out.into_iter().flatten().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), 2);
    assert!(
        errs.iter().any(|e| e.contains("values to all_reduce")),
        "{errs:?}"
    );
}

#[test]
fn shards_and_micro_batches_partition() {
    for (n, world) in [(10, 4), (12, 4), (3, 4), (7, 1)] {
        let shards: Vec<Shard> = (0..world).map(|r| Shard::of(n, r, world)).collect();
        assert!(shards.iter().all(|s| s.len == shards[0].len));
        assert_eq!(shards.iter().map(|s| s.valid).sum::<usize>(), n);
        for w in shards.windows(2) {
            assert_eq!(w[0].start + w[0].len, w[1].start);
        }
    }
    for (micros, world) in [(12, 4), (12, 3), (5, 4), (1, 2)] {
        let ranges: Vec<_> = (0..world).map(|r| micro_range(micros, r, world)).collect();
        let all: Vec<usize> = ranges.iter().flat_map(|r| r.clone()).collect();
        assert_eq!(all, (0..micros).collect::<Vec<_>>());
    }
}

// ------------------------------------------------------------------- training

/// A small prepared English slice (vocabulary 512, sequences of 32).
fn store() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| common::prepare_english_slice(600_000, 512, 32))
        .1
}

/// The tiny preset with a global batch of 12 micro-batches of 2 sequences,
/// so 1, 2, 3 and 4 ranks all split it evenly.
fn config(store: &TokenStore, steps: u64, extra: &[&str]) -> Config {
    let mut sets: Vec<String> = [
        format!("train.budget={steps} steps"),
        "train.micro_batch=2".into(),
        "train.batch_size=24".into(),
        "train.log_every=1".into(),
        "train.eval_every=1000".into(),
        "train.eval_batches=1".into(),
        // Full learning rate from the first step and strong decay, so that
        // three steps move the parameters far beyond the tolerance and a
        // shard's decay boundary matters.
        "train.warmup=0".into(),
        "train.weight_decay=0.1".into(),
    ]
    .into();
    sets.extend(extra.iter().map(|s| s.to_string()));
    let mut cfg = Config::resolve("tiny", &sets).unwrap();
    fit_to_data(&mut cfg, store).unwrap();
    cfg
}

fn opts(out: &Path, resume: bool, stop: Option<u64>) -> RunOptions {
    RunOptions {
        resume,
        stop_after_steps: stop,
        ..RunOptions::new(out)
    }
}

/// The parameters and moments of a run's newest checkpoint.
fn final_state(run: &Path, cfg: &Config) -> (u64, Vec<f32>, Vec<f32>) {
    let (step, dir) = checkpoint::latest(run).unwrap();
    let model = Model::new(&cfg.model);
    let params = checkpoint::load_params(&dir, &model).unwrap();
    let be = cram::backend::cpu::Cpu::new();
    let state = checkpoint::load(&be, &dir, &model).unwrap();
    (step, params, [state.weights.m, state.weights.v].concat())
}

/// The logged training losses and gradient norms, in order.
fn losses(run: &Path) -> Vec<f64> {
    read_without_timing(&run.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .filter_map(Record::as_train)
        .flat_map(|r| [r.loss, r.grad_norm])
        .collect()
}

fn run_ranks(cfg: &Config, store: &TokenStore, o: &RunOptions, ranks: usize, zero1: bool) {
    if ranks == 1 && !zero1 {
        pretrain(&cram::backend::cpu::Cpu::new(), cfg, store, o).unwrap();
    } else {
        cram::launch::pretrain_threads(cfg, store, o, ranks, zero1, Duration::from_secs(60))
            .unwrap();
    }
}

/// Parameters may differ from one process's only by the order of f32
/// additions (measured: at most 8.5e-7 after 3 steps that move them by
/// 6e-3; one step's weight decay alone is up to 1e-4).
const PARAM_TOL: f32 = 5e-6;

#[test]
fn ranks_match_one_process() {
    let data = store();
    let store = TokenStore::open(data).unwrap();
    // Without clipping, so that a wrongly scaled gradient shows in Adam's
    // moments and the logged norm (clipping hides the scale of the gradient).
    let cfg = config(&store, 3, &["train.grad_clip=0"]);
    ranks_match_one_process_with(&store, &cfg);
    // With clipping: the global norm must be the norm of the whole reduced gradient.
    let cfg = config(&store, 3, &["train.grad_clip=0.05"]);
    ranks_match_one_process_with(&store, &cfg);
}

fn ranks_match_one_process_with(store: &TokenStore, cfg: &Config) {
    let tmp = tempfile::tempdir().unwrap();
    let one = tmp.path().join("one");
    run_ranks(cfg, store, &opts(&one, false, None), 1, false);
    let (step, p1, mv1) = final_state(&one, cfg);
    assert_eq!(step, 3);
    let l1 = losses(&one);
    let start = cram::model::Model::new(&cfg.model).init_params(cfg.train.seed);
    let moved = common::max_diff(&p1, &start);
    assert!(
        moved > 1e-3,
        "training moved the parameters by only {moved}"
    );
    for (ranks, zero1) in [(2, false), (4, false), (2, true), (4, true)] {
        let run = tmp.path().join(format!("r{ranks}-z{zero1}"));
        run_ranks(cfg, store, &opts(&run, false, None), ranks, zero1);
        let (step, p, mv) = final_state(&run, cfg);
        assert_eq!(step, 3);
        let (dp, dmv) = (common::max_diff(&p, &p1), common::max_diff(&mv, &mv1));
        let l = losses(&run);
        let dl = l
            .iter()
            .zip(&l1)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0.0, f64::max);
        eprintln!(
            "clip {}: {ranks} ranks, zero1 {zero1}:",
            cfg.train.grad_clip
        );
        eprintln!(
            "   max |Δparam| {dp:.3e}, max |Δm,v| {dmv:.3e}, max rel. |Δ(loss, grad norm)| {dl:.3e} (params moved {moved:.3e})"
        );
        assert_eq!(l.len(), l1.len());
        assert!(
            dp <= PARAM_TOL,
            "{ranks} ranks, zero1 {zero1}: params differ by {dp}"
        );
        assert!(
            dmv <= PARAM_TOL,
            "{ranks} ranks, zero1 {zero1}: moments differ by {dmv}"
        );
        assert!(
            dl <= 1e-4,
            "{ranks} ranks, zero1 {zero1}: losses differ by {dl}"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

#[test]
fn zero1_checkpoint_resumes_on_other_rank_counts() {
    let data = store();
    let store = &TokenStore::open(data).unwrap();
    let cfg = &config(store, 4, &["train.grad_clip=0"]);
    let tmp = tempfile::tempdir().unwrap();
    // Uninterrupted on 4 ranks with ZeRO-1.
    let whole = tmp.path().join("whole");
    run_ranks(cfg, store, &opts(&whole, false, None), 4, true);
    let (_, p_whole, mv_whole) = final_state(&whole, cfg);
    // Stopped after 2 steps on 4 ranks, then resumed elsewhere.
    let stopped = tmp.path().join("stopped");
    run_ranks(cfg, store, &opts(&stopped, false, Some(2)), 4, true);
    assert_eq!(checkpoint::latest(&stopped).unwrap().0, 2);
    for (ranks, zero1) in [(1, false), (1, true), (3, true), (4, true), (3, false)] {
        let run = tmp.path().join(format!("resume-{ranks}-{zero1}"));
        copy_dir(&stopped, &run);
        run_ranks(cfg, store, &opts(&run, true, None), ranks, zero1);
        let (step, p, mv) = final_state(&run, cfg);
        assert_eq!(step, 4);
        let (dp, dmv) = (
            common::max_diff(&p, &p_whole),
            common::max_diff(&mv, &mv_whole),
        );
        eprintln!("resumed on {ranks} ranks (zero1 {zero1}): max |Δparam| {dp:.3e}, max |Δm,v| {dmv:.3e} vs 4 ranks uninterrupted");
        assert!(dp <= PARAM_TOL, "resumed on {ranks}: params differ by {dp}");
        assert!(
            dmv <= PARAM_TOL,
            "resumed on {ranks}: moments differ by {dmv}"
        );
    }
}

#[test]
fn data_parallel_over_one_rank_is_the_plain_step() {
    // A ZeRO-1 group of one must give exactly the single-process bits.
    let data = store();
    let store = &TokenStore::open(data).unwrap();
    let cfg = &config(store, 2, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    run_ranks(cfg, store, &opts(&a, false, None), 1, false);
    run_ranks(cfg, store, &opts(&b, false, None), 1, true);
    let (_, pa, mva) = final_state(&a, cfg);
    let (_, pb, mvb) = final_state(&b, cfg);
    assert_eq!(common::max_diff(&pa, &pb), 0.0);
    assert_eq!(common::max_diff(&mva, &mvb), 0.0);
}

// ----------------------------------------------------------------- rendezvous

use cram::parallel::rendezvous::{fetch, DistEnv, RendezvousError, RendezvousServer};

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let owned: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| {
        owned
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

#[test]
fn launcher_variables_are_parsed_with_clear_errors() {
    assert_eq!(DistEnv::from_vars(vars(&[])).unwrap(), None);
    let full = [
        ("RANK", "3"),
        ("WORLD_SIZE", "8"),
        ("LOCAL_RANK", "1"),
        ("MASTER_ADDR", "node0"),
        ("MASTER_PORT", "29500"),
    ];
    let env = DistEnv::from_vars(vars(&full)).unwrap().unwrap();
    assert_eq!(
        env,
        DistEnv {
            rank: 3,
            world_size: 8,
            local_rank: 1,
            master_addr: "node0".into(),
            master_port: 29500
        }
    );
    let with = |name: &str, value: Option<&str>| {
        let pairs: Vec<(&str, &str)> = full
            .iter()
            .filter(|(k, _)| *k != name)
            .copied()
            .chain(value.map(|v| (name, v)))
            .collect();
        DistEnv::from_vars(vars(&pairs)).unwrap_err().to_string()
    };
    assert!(with("MASTER_PORT", None).starts_with("MASTER_PORT is not set"));
    assert!(with("LOCAL_RANK", None).starts_with("LOCAL_RANK is not set"));
    assert!(with("RANK", Some("8"))
        .contains("RANK=8 is not valid: ranks run from 0 to WORLD_SIZE − 1 = 7"));
    assert!(with("RANK", Some("-1")).contains("RANK=-1 is not valid"));
    assert!(with("WORLD_SIZE", Some("0")).contains("WORLD_SIZE=0 is not valid"));
    assert!(with("MASTER_PORT", Some("70000")).contains("MASTER_PORT=70000 is not valid"));
    assert!(with("MASTER_ADDR", Some(" ")).contains("MASTER_ADDR= is not valid"));
}

fn unique_id() -> Vec<u8> {
    (0..128u32).map(|i| (i * 37 + 11) as u8).collect()
}

#[test]
fn rendezvous_hands_every_rank_the_id() {
    let world = 4;
    let server = RendezvousServer::bind("127.0.0.1", 0).unwrap();
    let port = server.local_addr().unwrap().port();
    let id = unique_id();
    let timeout = Duration::from_secs(20);
    let got: Vec<Vec<u8>> = std::thread::scope(|s| {
        let clients: Vec<_> = (1..world)
            .map(|rank| s.spawn(move || fetch("127.0.0.1", port, rank, world, timeout).unwrap()))
            .collect();
        server.serve(world, &id, timeout).unwrap();
        clients.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(got, vec![id; world - 1]);
}

#[test]
fn a_rank_that_starts_before_rank_0_waits_for_it() {
    let port = free_port();
    let id = unique_id();
    let env = |rank: usize| DistEnv {
        rank,
        world_size: 2,
        local_rank: rank,
        master_addr: "127.0.0.1".into(),
        master_port: port,
    };
    let timeout = Duration::from_secs(20);
    let got = std::thread::scope(|s| {
        let early =
            s.spawn(|| env(1).exchange(|| unreachable!("only rank 0 makes the id"), timeout));
        std::thread::sleep(Duration::from_millis(300));
        let served = env(0).exchange(unique_id, timeout).unwrap();
        assert_eq!(served, unique_id());
        early.join().unwrap().unwrap()
    });
    assert_eq!(got, id);
}

#[test]
fn a_missing_peer_fails_every_rank_with_its_name() {
    let world = 3;
    let server = RendezvousServer::bind("127.0.0.1", 0).unwrap();
    let port = server.local_addr().unwrap().port();
    let timeout = Duration::from_millis(800);
    let start = Instant::now();
    let (server_err, client_err) = std::thread::scope(|s| {
        let client = s.spawn(move || fetch("127.0.0.1", port, 1, world, timeout));
        let server_err = server.serve(world, &unique_id(), timeout).unwrap_err();
        (server_err, client.join().unwrap().unwrap_err())
    });
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(
        matches!(server_err, RendezvousError::PeersMissing { ref missing, .. } if missing == &vec![2]),
        "{server_err}"
    );
    assert!(server_err
        .to_string()
        .starts_with("rank 2 never reached the rendezvous at 127.0.0.1:"));
    // The waiting rank learns which one is missing, too.
    assert!(
        client_err.to_string().contains("rank 2 never reached"),
        "{client_err}"
    );
}

#[test]
fn a_missing_rank_0_is_named() {
    let port = free_port();
    let err = fetch("127.0.0.1", port, 2, 3, Duration::from_millis(500)).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "rank 2 could not reach rank 0 at 127.0.0.1:{port}"
        )),
        "{err}"
    );
}

#[test]
fn conflicting_ranks_are_refused() {
    let server = RendezvousServer::bind("127.0.0.1", 0).unwrap();
    let port = server.local_addr().unwrap().port();
    let timeout = Duration::from_secs(10);
    let (server_err, client_err) = std::thread::scope(|s| {
        let client = s.spawn(move || fetch("127.0.0.1", port, 1, 5, timeout));
        let e = server.serve(3, &unique_id(), timeout).unwrap_err();
        (e, client.join().unwrap().unwrap_err())
    });
    assert!(
        server_err
            .to_string()
            .contains("rank 1 was started with WORLD_SIZE=5, rank 0 with 3"),
        "{server_err}"
    );
    assert!(
        matches!(client_err, RendezvousError::Refused { .. }),
        "{client_err}"
    );
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// One rank of [`rendezvous_across_processes`]: runs only as a child process
/// (with `CRAM_TEST_RENDEZVOUS` set) and prints the id it got.
#[test]
fn rendezvous_rank_process() {
    let Ok(timeout_ms) = std::env::var("CRAM_TEST_RENDEZVOUS") else {
        return;
    };
    let env = DistEnv::from_env()
        .unwrap()
        .expect("the parent sets the launcher variables");
    match env.exchange(
        unique_id,
        Duration::from_millis(timeout_ms.parse().unwrap()),
    ) {
        // On a line of its own: the harness has printed "test … " before it.
        Ok(id) => println!(
            "\nID {}",
            id.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
        Err(e) => println!("\nERR {e}"),
    }
}

/// Ranks as separate processes, as a launcher starts them; `present` are
/// the ranks started. Returns each one's printed line.
fn launch_ranks(world: usize, present: &[usize], timeout_ms: u64) -> Vec<String> {
    let port = free_port();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = present
        .iter()
        .map(|&rank| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "rendezvous_rank_process",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env("CRAM_TEST_RENDEZVOUS", timeout_ms.to_string())
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines()
                .find(|l| l.starts_with("ID ") || l.starts_with("ERR "))
                .unwrap_or_else(|| panic!("a rank printed no result: {text}"))
                .to_string()
        })
        .collect()
}

#[test]
fn rendezvous_across_processes() {
    let lines = launch_ranks(3, &[2, 0, 1], 20_000);
    let want = format!(
        "ID {}",
        unique_id()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    assert_eq!(lines, vec![want; 3]);
    // Rank 1 never starts: ranks 0 and 2 stop with an error naming it.
    let lines = launch_ranks(3, &[0, 2], 1_000);
    for line in &lines {
        assert!(
            line.starts_with("ERR ") && line.contains("rank 1 never reached the rendezvous"),
            "{line}"
        );
    }
}

// ------------------------------------------------------------------------ CLI

#[test]
fn cli_ranks_as_threads_match_one_process() {
    let data = store();
    let tmp = tempfile::tempdir().unwrap();
    let pretrain = |out: &Path, extra: &[&str]| {
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_cram"))
            .args(["pretrain", "--preset", "tiny", "--device", "cpu", "--quiet"])
            .arg("--data")
            .arg(data)
            .arg("--out")
            .arg(out)
            .args([
                "--budget",
                "2 steps",
                "--set",
                "train.micro_batch=2",
                "--set",
                "train.batch_size=8",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        String::from_utf8_lossy(&status.stderr).into_owned()
    };
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    pretrain(&one, &[]);
    let log = pretrain(&two, &["--ranks", "2", "--zero1"]);
    assert!(log.contains("2 ranks as threads"), "{log}");
    let cfg = Config::load(&one.join("config.toml")).unwrap();
    let (_, p1, mv1) = final_state(&one, &cfg);
    let (_, p2, mv2) = final_state(&two, &cfg);
    assert!(common::max_diff(&p1, &p2) <= PARAM_TOL);
    assert!(common::max_diff(&mv1, &mv2) <= PARAM_TOL);
    // --zero1 alone has no ranks to shard over.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cram"))
        .args(["pretrain", "--preset", "tiny", "--device", "cpu", "--zero1"])
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(tmp.path().join("three"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--zero1 shards the optimizer across ranks")
    );
}

// ------------------------------------------------------------ gradient stages

/// Records, for each reported stage, its spans' gradients at that moment.
struct StageRecorder {
    stages: Vec<Vec<cram::backend::Span>>,
    seen: Vec<(usize, Vec<f32>)>,
}

impl cram::model::GradSync<cram::backend::cpu::Cpu> for StageRecorder {
    fn stage_done(&mut self, be: &cram::backend::cpu::Cpu, grads: &Vec<f32>, stage: usize) {
        use cram::backend::Device;
        let values = self.stages[stage]
            .iter()
            .flat_map(|s| be.read(grads, s.offset, s.len))
            .collect();
        self.seen.push((stage, values));
    }
}

/// The backward reports every stage once, in order, and a reported stage's
/// gradient does not change afterwards (what lets a bucket leave early).
#[test]
fn backward_reports_each_stage_when_its_gradient_is_final() {
    use cram::backend::Device;
    for (preset, tie) in [
        ("tiny", "true"),
        ("crammed-bert", "true"),
        ("bert-base", "false"),
    ] {
        let sets: Vec<String> = [
            "model.layers=3",
            "model.hidden=64",
            "model.heads=2",
            "model.ffn=128",
            "model.vocab_size=96",
            "model.max_positions=32",
            "data.seq_len=16",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("model.tie_embeddings={tie}")])
        .collect();
        let cfg = Config::resolve(preset, &sets).unwrap();
        let be = cram::backend::cpu::Cpu::new();
        let model = Model::new(&cfg.model);
        let (batch, seq) = (2, 16);
        let params = be.upload(&model.init_params(3));
        let mut grads = be.alloc(model.num_params());
        let mut acts = cram::model::Activations::new(&be, &model.cfg, batch, seq);
        let mut stats = be.alloc(cram::optim::STATS);
        let hb = cram::train::bench::synthetic_batch(&cfg, batch, seq, 4);
        let db = cram::model::upload_batch(&be, &hb);
        let mut rec = StageRecorder {
            stages: model.layout.grad_stages(),
            seen: Vec::new(),
        };
        cram::train::micro_step(
            &be,
            &model,
            (&params, &mut grads, &mut acts),
            &db,
            &mut stats,
            (0.1, 1),
            &mut rec,
        );
        let order: Vec<usize> = rec.seen.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            order,
            (0..cfg.model.layers + 2).collect::<Vec<_>>(),
            "{preset}"
        );
        for (stage, values) in &rec.seen {
            let now: Vec<f32> = rec.stages[*stage]
                .iter()
                .flat_map(|s| be.read(&grads, s.offset, s.len))
                .collect();
            assert_eq!(
                values, &now,
                "{preset}: stage {stage} changed after it was reported"
            );
            assert!(
                now.iter().any(|&g| g != 0.0),
                "{preset}: stage {stage} has no gradient"
            );
        }
    }
}
