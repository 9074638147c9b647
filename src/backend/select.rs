//! Choosing the device a command runs on (`--device`), and running generic
//! code on whichever one started.

use super::{cpu, cuda, Device};

/// Which device a command runs on (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DeviceChoice {
    /// The GPU when one is usable, else the CPU (saying why).
    #[default]
    Auto,
    Cpu,
    Cuda,
}

/// A started device of either kind; commands dispatch their generic code on it.
pub enum AnyDevice {
    Cpu(cpu::Cpu),
    Cuda(Box<cuda::Cuda>),
}

impl AnyDevice {
    pub fn name(&self) -> String {
        match self {
            AnyDevice::Cpu(d) => d.name(),
            AnyDevice::Cuda(d) => d.name(),
        }
    }
}

/// Starts the device `choice` names. `Auto` falls back to the CPU when no
/// GPU can be used and returns the reason as a note for the user. A
/// `CRAM_*` switch with a value it does not have is an error for `Cuda`
/// and `Auto` alike: a mistyped switch is the user's to fix, not a reason
/// to train on the CPU.
pub fn select_device(choice: DeviceChoice) -> Result<(AnyDevice, Option<String>), cuda::CudaError> {
    if choice == DeviceChoice::Cpu {
        return Ok((AnyDevice::Cpu(cpu::Cpu::new()), None));
    }
    let switches = cuda::CudaSwitches::from_env()?;
    match (choice, cuda::Cuda::with_switches(0, switches)) {
        (_, Ok(gpu)) => Ok((AnyDevice::Cuda(Box::new(gpu)), None)),
        (DeviceChoice::Auto, Err(why)) => Ok((
            AnyDevice::Cpu(cpu::Cpu::new()),
            Some(format!("no GPU in use ({why}); running on the CPU")),
        )),
        (_, Err(why)) => Err(cuda::CudaError::Requested(Box::new(why))),
    }
}

/// Runs a generic expression on whichever device `$dev` holds, binding it to `$be`.
#[macro_export]
macro_rules! on_device {
    ($dev:expr, |$be:ident| $body:expr) => {
        match $dev {
            $crate::backend::AnyDevice::Cpu($be) => $body,
            $crate::backend::AnyDevice::Cuda($be) => {
                let $be: &$crate::backend::cuda::Cuda = &*$be;
                $body
            }
        }
    };
}
