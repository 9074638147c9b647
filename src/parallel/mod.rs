//! Data-parallel training over several ranks: the collectives ([`comm`]),
//! the data-parallel and ZeRO-1 optimizer logic ([`data_parallel`]),
//! gradient buckets ([`buckets`]), NCCL ([`nccl`]) and its device path on
//! the CUDA backend ([`nccl_device`]), and the rendezvous of launched ranks
//! ([`rendezvous`]). It sits below the trainer, which runs one rank of a
//! group through these types; starting the ranks (threads, worker
//! processes) is [`crate::launch`]'s, above the trainer.

pub mod buckets;
pub mod comm;
pub mod data_parallel;
pub mod nccl;
pub mod nccl_device;
mod nccl_join;
pub mod rendezvous;

pub use comm::{CommError, Communicator, SingleComm, ThreadComm};
pub use data_parallel::{micro_range, DataParallel, HostStaged, Shard, StepReducer};
pub use rendezvous::{DistEnv, RendezvousError, RendezvousServer};
