//! The fits recover the laws that generated synthetic data (with noise):
//! exponents within 2%, compute-optimal exponents within 0.02; degenerate
//! points fail with a message instead of a number.

use cram::scaling::fit::{
    fit_all, frontier, isoflop, joint, l_of_d, l_of_n, parametric, FitOptions, Parametric,
};
use cram::scaling::points::ParamCount;
use cram::scaling::{Curve, Point, PointSet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Hoffmann et al.'s fitted law (their equation 10).
const CHINCHILLA: Parametric = Parametric {
    e: 1.69,
    a: 406.4,
    b: 410.7,
    alpha: 0.34,
    beta: 0.28,
};

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Multiplicative noise of relative size `sigma`.
fn noisy(rng: &mut ChaCha8Rng, loss: f64, sigma: f64) -> f64 {
    loss * (sigma * normal(rng)).exp()
}

fn log_space(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| (lo.ln() + (hi.ln() - lo.ln()) * i as f64 / (n - 1) as f64).exp())
        .collect()
}

fn point(n: f64, d: f64, loss: f64) -> Point {
    Point::simple(format!("n{n:.3e}-d{d:.3e}"), n, d, loss)
}

fn assert_close(name: &str, got: f64, want: f64, rel: f64) {
    let err = (got / want - 1.0).abs();
    eprintln!(
        "{name}: fitted {got:.5}, true {want:.5}, relative error {:.3}%",
        100.0 * err
    );
    assert!(err < rel, "{name}: fitted {got} vs true {want}");
}

fn assert_near(name: &str, got: f64, want: f64, abs: f64) {
    eprintln!(
        "{name}: fitted {got:.5}, true {want:.5}, error {:.4}",
        (got - want).abs()
    );
    assert!(
        (got - want).abs() < abs,
        "{name}: fitted {got} vs true {want}"
    );
}

/// A grid of sizes × token counts from the Chinchilla law, 0.3% noise.
fn chinchilla_grid(seed: u64) -> Vec<Point> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pts = Vec::new();
    for n in log_space(1e7, 1e10, 10) {
        for d in log_space(1e8, 1e11, 8) {
            pts.push(point(n, d, noisy(&mut rng, CHINCHILLA.loss(n, d), 0.003)));
        }
    }
    pts
}

#[test]
fn approach3_recovers_the_chinchilla_law() {
    let pts = chinchilla_grid(1);
    let t = std::time::Instant::now();
    let fit = parametric(&pts, ParamCount::Total).unwrap();
    eprintln!(
        "approach 3 over 4500 starts: {:.2}s",
        t.elapsed().as_secs_f64()
    );
    assert_close("alpha", fit.alpha, CHINCHILLA.alpha, 0.02);
    assert_close("beta", fit.beta, CHINCHILLA.beta, 0.02);
    assert_near(
        "a = beta/(alpha+beta)",
        fit.optimal_n_exponent(),
        CHINCHILLA.optimal_n_exponent(),
        0.02,
    );
    assert_near(
        "b = alpha/(alpha+beta)",
        fit.optimal_d_exponent(),
        CHINCHILLA.optimal_d_exponent(),
        0.02,
    );
    assert_close("E", fit.e, CHINCHILLA.e, 0.05);
}

/// Runs of each compute level centred on the true optimum, as a sweep
/// planned around a guess of it would be.
fn isoflop_points(seed: u64) -> Vec<Point> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pts = Vec::new();
    for c in log_space(1e18, 1e22, 5) {
        let (n_opt, _) = CHINCHILLA.optimum(c);
        for f in log_space(0.2, 5.0, 9) {
            let n = n_opt * f;
            let d = c / (6.0 * n);
            pts.push(point(n, d, noisy(&mut rng, CHINCHILLA.loss(n, d), 0.001)));
        }
    }
    pts
}

#[test]
fn approach2_recovers_the_optimal_exponents() {
    let iso = isoflop(&isoflop_points(2), ParamCount::Total).unwrap();
    assert_eq!(iso.levels.len(), 5, "{:?}", iso.skipped);
    assert_near(
        "approach 2: a",
        iso.n_line.slope,
        CHINCHILLA.optimal_n_exponent(),
        0.02,
    );
    assert_near(
        "approach 2: b",
        iso.d_line.slope,
        CHINCHILLA.optimal_d_exponent(),
        0.02,
    );
}

/// Training curves (loss against tokens) of many sizes under the Chinchilla law.
fn chinchilla_curves(seed: u64) -> PointSet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut set = PointSet::default();
    for (i, n) in log_space(1e6, 1e10, 25).into_iter().enumerate() {
        let samples: Vec<(f64, f64)> = log_space(1e6, 1e13, 141)
            .into_iter()
            .map(|d| (d, noisy(&mut rng, CHINCHILLA.loss(n, d), 0.0005)))
            .collect();
        let run = format!("run{i}");
        let (d, loss) = *samples.last().unwrap();
        set.points.push(Point {
            run: run.clone(),
            ..point(n, d, loss)
        });
        set.curves.push(Curve {
            run,
            n_params: n,
            n_total: n,
            flops_per_token: 6.0 * n,
            samples,
        });
    }
    set
}

#[test]
fn envelope_recovers_the_optimal_exponents() {
    let set = chinchilla_curves(3);
    for count in [ParamCount::NonEmbedding, ParamCount::Total] {
        let f = frontier(&set, count).unwrap();
        assert_near(
            "envelope: a",
            f.n_exponent(),
            CHINCHILLA.optimal_n_exponent(),
            0.02,
        );
        assert_near(
            "envelope: b",
            f.d_exponent(),
            CHINCHILLA.optimal_d_exponent(),
            0.02,
        );
    }
}

/// Kaplan et al.'s joint law (their equation 1.5 constants).
const KAPLAN: (f64, f64, f64, f64) = (0.076, 0.095, 8.8e13, 5.4e13);

fn kaplan_loss(n: f64, d: f64) -> f64 {
    let (an, ad, nc, dc) = KAPLAN;
    ((nc / n).powf(an / ad) + dc / d).powf(ad)
}

#[test]
fn kaplan_joint_law_is_recovered() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut pts = Vec::new();
    for n in log_space(1e6, 1e10, 8) {
        for d in log_space(1e7, 1e11, 8) {
            pts.push(point(n, d, noisy(&mut rng, kaplan_loss(n, d), 0.002)));
        }
    }
    let j = joint(&pts).unwrap();
    assert_close("alpha_n", j.alpha_n, KAPLAN.0, 0.02);
    assert_close("alpha_d", j.alpha_d, KAPLAN.1, 0.02);
    assert_near(
        "joint N_opt exponent",
        j.optimal_n_exponent(),
        KAPLAN.1 / (KAPLAN.0 + KAPLAN.1),
        0.02,
    );
    assert_close("N_c", j.n_c, KAPLAN.2, 0.5);
    assert_close("D_c", j.d_c, KAPLAN.3, 0.5);
}

#[test]
fn kaplan_single_variable_laws_are_recovered() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (an, ad, nc, dc) = KAPLAN;
    let by_n: Vec<Point> = log_space(1e6, 1e10, 12)
        .into_iter()
        .map(|n| point(n, 1e12, noisy(&mut rng, (nc / n).powf(an), 0.002)))
        .collect();
    let (law, _) = l_of_n(&by_n).unwrap();
    assert_close("L(N): alpha_n", law.exponent, an, 0.02);
    let by_d: Vec<Point> = log_space(1e7, 1e11, 12)
        .into_iter()
        .map(|d| point(1e10, d, noisy(&mut rng, (dc / d).powf(ad), 0.002)))
        .collect();
    let (law, _) = l_of_d(&by_d).unwrap();
    assert_close("L(D): alpha_d", law.exponent, ad, 0.02);
}

#[test]
fn fit_all_reports_every_key_with_intervals() {
    let set = PointSet {
        points: isoflop_points(6),
        curves: Vec::new(),
    };
    let report = fit_all(
        &set,
        FitOptions {
            bootstrap: 20,
            seed: 1,
            max_loss: None,
        },
    )
    .unwrap();
    let json = serde_json::to_value(&report).unwrap();
    for key in ["alpha_n", "alpha_d", "n_c", "d_c", "optimal_n_exponent"] {
        let e = &json["kaplan"][key];
        assert!(
            e["value"].as_f64().unwrap().is_finite(),
            "kaplan.{key}: {e}"
        );
        assert!(e["ci"].is_array(), "kaplan.{key} has no interval: {e}");
    }
    for key in [
        "e",
        "a",
        "b",
        "alpha",
        "beta",
        "optimal_n_exponent",
        "optimal_d_exponent",
    ] {
        let e = &json["chinchilla"][key];
        let v = e["value"].as_f64().unwrap();
        let ci = e["ci"]
            .as_array()
            .unwrap_or_else(|| panic!("chinchilla.{key} has no interval"));
        let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
        assert!(
            lo <= v * 1.0001 && v <= hi * 1.0001,
            "chinchilla.{key}: {v} outside [{lo}, {hi}]"
        );
    }
    assert_near(
        "approach 3 a via fit_all",
        report.chinchilla.optimal_n_exponent.as_ref().unwrap().value,
        CHINCHILLA.optimal_n_exponent(),
        0.02,
    );
    assert!(report.chinchilla.approach2.is_some(), "{:?}", report.notes);
    assert_eq!(report.kaplan.residuals.points.len(), set.points.len());
    let residuals = report.chinchilla.residuals.as_ref().unwrap();
    assert!(residuals.rms < 0.01, "{}", residuals.rms);
    println!("{}", report.table());
}

#[test]
fn degenerate_points_fail_loudly() {
    let one_size: Vec<Point> = log_space(1e8, 1e10, 6)
        .into_iter()
        .map(|d| point(1e7, d, CHINCHILLA.loss(1e7, d)))
        .collect();
    let set = PointSet {
        points: one_size,
        curves: Vec::new(),
    };
    let e = fit_all(&set, FitOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("one model size"), "{e}");

    let mut pts = chinchilla_grid(7);
    pts[3].loss = f64::NAN;
    let set = PointSet {
        points: pts,
        curves: Vec::new(),
    };
    let e = fit_all(&set, FitOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("loss = NaN"), "{e}");

    // Two sizes but one token count: the D term of a joint law is not identifiable.
    let one_d: Vec<Point> = log_space(1e7, 1e9, 6)
        .into_iter()
        .map(|n| point(n, 1e9, CHINCHILLA.loss(n, 1e9)))
        .collect();
    let set = PointSet {
        points: one_d,
        curves: Vec::new(),
    };
    let e = fit_all(&set, FitOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("1 token count"), "{e}");
    assert!(isoflop(&set.points, ParamCount::Total).is_err());
}
