//! The CUDA backend's comparison switches: each keeps another kernel path
//! selectable in the same binary, so that one device command can time both
//! (`bench/speed_ab.sh`). [`Cuda::new`](super::Cuda::new) reads them from
//! the `CRAM_*` environment variables ([`CudaSwitches::from_env`]); the GPU
//! tests give them to [`Cuda::with_switches`](super::Cuda::with_switches)
//! instead of changing the process's environment.

use super::blas::Tune;
use super::CudaError;
use crate::backend::fp8::Fp8Switch;

/// `CRAM_FUSED_ATTENTION`: which fused attention kernels may run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FusedAttention {
    /// The short kernels up to 128 rows, flash kernels past them.
    #[default]
    All,
    /// `flash`: the flash kernels for short sequences too.
    FlashOnly,
    /// `0`: neither (cuBLASLt products around a softmax kernel).
    Off,
}

/// `CRAM_FLASH_FORWARD`: which flash forward runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlashForward {
    /// wgmma on Hopper, else two m-tiles a warp where the sequence allows.
    #[default]
    Default,
    /// `mma`: the mma.sync kernels on Hopper too.
    Mma,
    /// `m1`: mma.sync with one m-tile a warp.
    M1,
}

/// `CRAM_FLASH_BACKWARD`: which flash backward runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlashBackward {
    /// wgmma on Hopper, else mma.sync; one key tile a block.
    #[default]
    Default,
    /// `mma`: the mma.sync kernel on Hopper too.
    Mma,
    /// `k2`: mma.sync with two key tiles a block.
    K2,
}

/// Every switch of the CUDA backend; the default is what runs unswitched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CudaSwitches {
    pub fused_attention: FusedAttention,
    pub flash_forward: FlashForward,
    pub flash_backward: FlashBackward,
    /// `CRAM_FLASH_DQ=red`: the wgmma backward adds its dQ parts by
    /// per-thread reductions instead of bulk reductions of staged rows.
    pub flash_dq_red: bool,
    /// `CRAM_RESIDUAL=f32`: the residual stream in f32 instead of bf16.
    pub f32_residual: bool,
    /// `CRAM_FP8` (`backend/fp8.rs`, where any value but `forward` and
    /// `blocks` is off; the CPU backend reads it too).
    pub fp8: Fp8Switch,
    /// `CRAM_FP8_ACCUM=split`: FP8 products promote their sums to f32.
    pub fp8_split_accum: bool,
    /// `CRAM_MATMUL_TUNE` (`blas/tune.rs`).
    pub matmul_tune: Tune,
    /// `CRAM_CUDA_DEBUG=1`: every launch printed and waited for.
    pub debug: bool,
}

impl CudaSwitches {
    /// The switches as the environment sets them. An unset or empty
    /// variable is the default; a value no switch has is an error that
    /// names the values there are.
    pub fn from_env() -> Result<CudaSwitches, CudaError> {
        Self::parse(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    fn parse(var: impl Fn(&str) -> Option<String>) -> Result<CudaSwitches, CudaError> {
        use FlashBackward as B;
        use FlashForward as F;
        use FusedAttention as A;
        Ok(CudaSwitches {
            fused_attention: choose(
                &var,
                "CRAM_FUSED_ATTENTION",
                &[("flash", A::FlashOnly), ("0", A::Off)],
            )?,
            flash_forward: choose(
                &var,
                "CRAM_FLASH_FORWARD",
                &[("mma", F::Mma), ("m1", F::M1)],
            )?,
            flash_backward: choose(
                &var,
                "CRAM_FLASH_BACKWARD",
                &[("mma", B::Mma), ("k2", B::K2)],
            )?,
            flash_dq_red: choose(&var, "CRAM_FLASH_DQ", &[("red", true), ("bulk", false)])?,
            f32_residual: choose(&var, "CRAM_RESIDUAL", &[("f32", true), ("bf16", false)])?,
            fp8: Fp8Switch::from_value(var("CRAM_FP8").as_deref().unwrap_or_default()),
            fp8_split_accum: choose(&var, "CRAM_FP8_ACCUM", &[("split", true), ("fast", false)])?,
            matmul_tune: choose(
                &var,
                "CRAM_MATMUL_TUNE",
                &[("off", Tune::First), ("report", Tune::Report)],
            )?,
            debug: var("CRAM_CUDA_DEBUG").is_some_and(|v| v != "0"),
        })
    }

    /// The switches that change what runs on a GPU of compute capability
    /// (`major`, `minor`), as a user sets them: the device's name lists
    /// them, so that every "device:" line and bench result says what it
    /// measured. (The wgmma switches change nothing before Hopper, nor FP8
    /// before 8.9.)
    pub fn names(&self, wgmma: bool, fp8_cores: bool) -> Vec<&'static str> {
        let fp8 = if fp8_cores {
            self.fp8
        } else {
            Fp8Switch::default()
        };
        [
            (
                self.fused_attention == FusedAttention::Off,
                "CRAM_FUSED_ATTENTION=0",
            ),
            (
                self.fused_attention == FusedAttention::FlashOnly,
                "CRAM_FUSED_ATTENTION=flash",
            ),
            (
                self.flash_forward == FlashForward::M1,
                "CRAM_FLASH_FORWARD=m1",
            ),
            (
                wgmma && self.flash_forward == FlashForward::Mma,
                "CRAM_FLASH_FORWARD=mma",
            ),
            (
                wgmma && self.flash_backward == FlashBackward::Mma,
                "CRAM_FLASH_BACKWARD=mma",
            ),
            (
                self.flash_backward == FlashBackward::K2,
                "CRAM_FLASH_BACKWARD=k2",
            ),
            (
                wgmma && self.flash_backward == FlashBackward::Default && self.flash_dq_red,
                "CRAM_FLASH_DQ=red",
            ),
            (self.f32_residual, "CRAM_RESIDUAL=f32"),
            (self.matmul_tune == Tune::First, "CRAM_MATMUL_TUNE=off"),
        ]
        .into_iter()
        .filter_map(|(on, switch)| on.then_some(switch))
        .chain(fp8.name())
        .chain(
            (self.fp8_split_accum && fp8 != Fp8Switch::default()).then_some("CRAM_FP8_ACCUM=split"),
        )
        .collect()
    }
}

/// Variable `name`'s value among `choices`, or the type's default where it
/// is unset.
fn choose<T: Copy + Default>(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    choices: &[(&str, T)],
) -> Result<T, CudaError> {
    let Some(value) = var(name) else {
        return Ok(T::default());
    };
    match choices.iter().find(|(v, _)| *v == value) {
        Some(&(_, choice)) => Ok(choice),
        None => {
            let values: Vec<&str> = choices.iter().map(|(v, _)| *v).collect();
            Err(CudaError::Switch(format!(
                "{name}={value} is not one of its values ({}); set one of them or unset {name}",
                values.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<CudaSwitches, CudaError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CudaSwitches::parse(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn unset_is_the_default() {
        assert_eq!(parse(&[]).unwrap(), CudaSwitches::default());
        assert!(CudaSwitches::default().names(true, true).is_empty());
    }

    #[test]
    fn each_value_sets_its_switch_and_its_name() {
        let s = parse(&[
            ("CRAM_FUSED_ATTENTION", "flash"),
            ("CRAM_FLASH_FORWARD", "mma"),
            ("CRAM_FLASH_BACKWARD", "mma"),
            ("CRAM_RESIDUAL", "f32"),
            ("CRAM_CUDA_DEBUG", "1"),
        ])
        .unwrap();
        let red = parse(&[("CRAM_FLASH_DQ", "red")]).unwrap();
        assert!(red.flash_dq_red);
        assert_eq!(red.names(true, true), ["CRAM_FLASH_DQ=red"]);
        // Only the wgmma backward has the bulk reductions.
        assert!(red.names(false, true).is_empty());
        assert_eq!(s.fused_attention, FusedAttention::FlashOnly);
        assert_eq!(s.flash_forward, FlashForward::Mma);
        assert_eq!(s.flash_backward, FlashBackward::Mma);
        assert!(s.f32_residual && s.debug);
        assert_eq!(
            s.names(true, true),
            [
                "CRAM_FUSED_ATTENTION=flash",
                "CRAM_FLASH_FORWARD=mma",
                "CRAM_FLASH_BACKWARD=mma",
                "CRAM_RESIDUAL=f32"
            ]
        );
        // Before Hopper the wgmma switches change nothing, so are not named.
        assert_eq!(
            s.names(false, true),
            ["CRAM_FUSED_ATTENTION=flash", "CRAM_RESIDUAL=f32"]
        );
        assert!(!parse(&[("CRAM_CUDA_DEBUG", "0")]).unwrap().debug);
    }

    #[test]
    fn an_unknown_value_names_the_values_there_are() {
        let err = parse(&[("CRAM_FLASH_BACKWARD", "wgmma2")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("CRAM_FLASH_BACKWARD=wgmma2"), "{err}");
        assert!(err.contains("mma, k2"), "{err}");
    }
}
