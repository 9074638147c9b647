//! Data-parallel training over several ranks: the collectives
//! ([`comm`]), the data-parallel and ZeRO-1 optimizer logic ([`parallel`]),
//! gradient buckets ([`buckets`]), NCCL ([`nccl`]) and its device path on
//! the CUDA backend ([`nccl_device`]), and the in-process launcher that runs
//! ranks as threads ([`threads`]).

pub mod buckets;
pub mod comm;
pub mod nccl;
pub mod nccl_device;
pub mod parallel;
pub mod rendezvous;
pub mod threads;

pub use comm::{CommError, Communicator, SingleComm, ThreadComm};
pub use parallel::{micro_range, DataParallel, HostStaged, Shard, StepReducer};
pub use rendezvous::{DistEnv, RendezvousError, RendezvousServer};
pub use threads::pretrain_threads;
