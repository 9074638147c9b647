//! Scaling laws: sweeps of pretraining runs over model size, data and
//! compute (`sweep`), the table of their results (`points`), the Kaplan and
//! Chinchilla fits with bootstrap intervals (`fit`), the compute-optimal plan
//! for a budget (`plan`), and the gradient noise scale that estimates the
//! critical batch size (`noise`) with the critical batch measured directly
//! from runs at several batch sizes (`batch`), and the masked-LM plateau
//! that the fits leave out (`plateau`). Counting conventions are in `counts`.

pub mod batch;
pub mod counts;
mod error;
pub mod fit;
/// The noise meter runs inside training, so it lives in `train`; it is
/// part of what scaling measures, so it is named here too.
pub use crate::train::noise;
pub mod plan;
pub mod plateau;
pub mod points;
pub mod spec;
pub mod sweep;

pub use counts::Counts;
pub use error::ScalingError;
pub use points::{Curve, Point, PointSet};
