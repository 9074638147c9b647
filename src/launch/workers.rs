//! `--gpus N` of `cram pretrain` and `cram bench`: the same command once per
//! local GPU, each process started as one rank of a distributed launch (the
//! variables torchrun sets), so that a rank cannot tell `cram` from any
//! other launcher.

use anyhow::{bail, Context};
use std::process::Child;
use std::time::Duration;

/// The rank's view of the launch: what a launcher exports for each process.
pub fn worker_env(rank: usize, world: usize, port: u16) -> [(&'static str, String); 5] {
    [
        ("RANK", rank.to_string()),
        ("WORLD_SIZE", world.to_string()),
        ("LOCAL_RANK", rank.to_string()),
        ("MASTER_ADDR", "127.0.0.1".to_string()),
        ("MASTER_PORT", port.to_string()),
    ]
}

/// The workers' command line: the launcher's without `--gpus N` (or
/// `--gpus=N`), so that each worker runs as a rank instead of launching.
pub fn worker_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--gpus" {
            it.next();
        } else if !a.starts_with("--gpus=") {
            out.push(a);
        }
    }
    out
}

/// `--gpus N` must name between 1 and the `visible` GPUs; checked before
/// any worker starts, so that a worker does not fail on a GPU that is not there.
pub fn check_gpu_count(gpus: usize, visible: usize) -> anyhow::Result<()> {
    if gpus == 0 {
        bail!("--gpus needs at least 1");
    }
    if gpus > visible {
        bail!(
            "--gpus {gpus} asks for more GPUs than this machine shows: {visible} visible (CUDA_VISIBLE_DEVICES applies)"
        );
    }
    Ok(())
}

/// `--bucket-mb` in bytes of f32 gradients.
pub fn bucket_bytes(mb: f64) -> anyhow::Result<usize> {
    if mb.is_nan() || mb <= 0.0 {
        bail!("--bucket-mb must be positive");
    }
    Ok((mb * (1 << 20) as f64) as usize)
}

/// Starts this command once per GPU, each as one rank, and waits for all
/// of them; fails naming the ranks that failed. `visible` counts the GPUs
/// (its error is the command's own sentence for a machine without one); it
/// is asked only once `gpus` is known to be a count.
pub fn launch_local_workers(
    gpus: usize,
    visible: impl FnOnce() -> anyhow::Result<usize>,
) -> anyhow::Result<()> {
    check_gpu_count(gpus, usize::MAX)?;
    check_gpu_count(gpus, visible()?)?;
    let args = worker_args(std::env::args().skip(1));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("cannot find a free local port for the rendezvous")?
        .port();
    let exe = std::env::current_exe().context("cannot find the cram executable")?;
    let mut children = Vec::new();
    for rank in 0..gpus {
        let child = std::process::Command::new(&exe)
            .args(&args)
            .envs(worker_env(rank, gpus, port))
            .spawn()
            .with_context(|| format!("cannot start the worker of rank {rank}"))?;
        children.push(child);
    }
    wait_for_workers(children, Duration::from_millis(100))
}

/// Waits for every worker; when one fails, stops the others at once (they
/// would otherwise wait in a collective for the failed rank until
/// `--dist-timeout`) and fails naming the rank that failed first.
pub fn wait_for_workers(mut children: Vec<Child>, poll: Duration) -> anyhow::Result<()> {
    let mut running: Vec<usize> = (0..children.len()).collect();
    let mut first_failure: Option<String> = None;
    while !running.is_empty() {
        let mut still = Vec::new();
        for &rank in &running {
            match children[rank]
                .try_wait()
                .with_context(|| format!("cannot wait for the worker of rank {rank}"))?
            {
                Some(status) if !status.success() => {
                    first_failure.get_or_insert_with(|| format!("rank {rank} ({status})"));
                }
                Some(_) => {}
                None => still.push(rank),
            }
        }
        running = still;
        if first_failure.is_some() {
            for &rank in &running {
                // Best effort: a worker that has just exited cannot be killed.
                let _ = children[rank].kill();
                let _ = children[rank].wait();
            }
            let stopped = running.len();
            let cause = first_failure.unwrap_or_default();
            if stopped > 0 {
                bail!("worker {cause} failed; stopped the other {stopped} worker(s)");
            }
            bail!("worker {cause} failed");
        }
        if !running.is_empty() {
            std::thread::sleep(poll);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn workers_get_the_command_without_gpus() {
        let args = strings(&["bench", "--gpus", "4", "--zero1", "--steps", "3"]);
        assert_eq!(
            worker_args(args),
            strings(&["bench", "--zero1", "--steps", "3"])
        );
        let args = strings(&["pretrain", "--gpus=2", "--data", "d", "--gpus-note"]);
        assert_eq!(
            worker_args(args),
            strings(&["pretrain", "--data", "d", "--gpus-note"]),
            "only --gpus and --gpus=N are the launcher's"
        );
    }

    #[test]
    fn each_worker_is_a_rank_of_the_launch() {
        let vars = worker_env(2, 4, 29500);
        let get = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        };
        let env = crate::parallel::DistEnv::from_vars(get)
            .unwrap()
            .expect("every variable is set");
        assert_eq!((env.rank, env.world_size, env.local_rank), (2, 4, 2));
        assert_eq!(
            (env.master_addr.as_str(), env.master_port),
            ("127.0.0.1", 29500)
        );
    }

    #[test]
    fn gpu_count_is_checked_against_the_visible_ones() {
        assert!(check_gpu_count(2, 8).is_ok());
        assert!(check_gpu_count(8, 8).is_ok());
        let err = check_gpu_count(4, 2).unwrap_err().to_string();
        assert!(
            err.contains("--gpus 4") && err.contains("2 visible"),
            "{err}"
        );
        assert!(check_gpu_count(0, 2).is_err());
    }

    fn spawn(script: &str) -> Child {
        std::process::Command::new("sh")
            .args(["-c", script])
            .spawn()
            .expect("sh runs")
    }

    #[test]
    fn a_failed_worker_stops_the_others_at_once() {
        let clock = std::time::Instant::now();
        let children = vec![
            spawn("sleep 30"),
            spawn("sleep 0.2; exit 3"),
            spawn("sleep 30"),
        ];
        let err = wait_for_workers(children, Duration::from_millis(20)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("rank 1") && text.contains("stopped the other 2 worker(s)"),
            "{text}"
        );
        assert!(
            clock.elapsed() < Duration::from_secs(10),
            "the sleeping workers were stopped, not waited for: {:?}",
            clock.elapsed()
        );
    }

    #[test]
    fn workers_that_all_succeed_are_waited_for() {
        let children = vec![spawn("sleep 0.1"), spawn("true")];
        wait_for_workers(children, Duration::from_millis(20)).unwrap();
    }

    #[test]
    fn bucket_size_must_be_positive() {
        assert_eq!(bucket_bytes(25.0).unwrap(), 25 << 20);
        assert!(bucket_bytes(0.0).is_err());
        assert!(bucket_bytes(f64::NAN).is_err());
    }
}
