//! Launch environment and the TCP rendezvous of a multi-process run.
//!
//! A launcher (torchrun, SLURM with the variables exported, an mpirun
//! wrapper, or `cram` itself) starts one process per GPU and sets `RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT`. Rank 0
//! listens at `MASTER_ADDR:MASTER_PORT`; every other rank connects, says who
//! it is, and once all have arrived rank 0 sends each one the same blob (the
//! 128-byte NCCL unique id). If a rank never arrives within the timeout,
//! rank 0 fails with an error naming it and tells the waiting ranks the same,
//! so no process hangs.
//!
//! Wire format: the client sends `CRAMRDV1`, its rank and the world size (u32
//! little-endian each); the server answers a status byte (0: the blob
//! follows, 1: an error message follows), a u32 length and the bytes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};
use thiserror::Error;

const MAGIC: &[u8; 8] = b"CRAMRDV1";

#[derive(Debug, Error)]
pub enum RendezvousError {
    #[error("{name} is not set; a distributed launch sets all of RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT")]
    MissingVar { name: &'static str },
    #[error("{name}={value} is not valid: {why}")]
    BadVar {
        name: &'static str,
        value: String,
        why: String,
    },
    #[error("rank 0 cannot listen at {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("{} never reached the rendezvous at {addr} within {timeout:?}", ranks_list(.missing))]
    PeersMissing {
        addr: String,
        missing: Vec<usize>,
        timeout: Duration,
    },
    #[error("rank {rank} could not reach rank 0 at {addr} within {timeout:?}: {why}")]
    MasterUnreachable {
        rank: usize,
        addr: String,
        timeout: Duration,
        why: String,
    },
    #[error("rank 0 at {addr} stopped the rendezvous: {message}")]
    Refused { addr: String, message: String },
    #[error("a peer at {peer} broke the rendezvous protocol: {why}")]
    Protocol { peer: String, why: String },
}

fn ranks_list(ranks: &[usize]) -> String {
    let names: Vec<String> = ranks.iter().map(|r| r.to_string()).collect();
    if ranks.len() == 1 {
        format!("rank {}", names[0])
    } else {
        format!("ranks {}", names.join(", "))
    }
}

/// Where this process sits in a distributed launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    pub rank: usize,
    pub world_size: usize,
    /// The rank within this node: the GPU index it uses.
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
}

pub const ENV_VARS: [&str; 5] = [
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
];

impl DistEnv {
    /// Reads the launcher's variables from the process environment: `None`
    /// when none of them is set (a plain single-process run).
    pub fn from_env() -> Result<Option<DistEnv>, RendezvousError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// As [`DistEnv::from_env`], reading variables through `get`.
    pub fn from_vars(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<DistEnv>, RendezvousError> {
        if ENV_VARS.iter().all(|n| get(n).is_none()) {
            return Ok(None);
        }
        let var = |name: &'static str| {
            get(name)
                .map(|v| v.trim().to_string())
                .ok_or(RendezvousError::MissingVar { name })
        };
        let number = |name: &'static str| -> Result<usize, RendezvousError> {
            let value = var(name)?;
            value.parse().map_err(|_| RendezvousError::BadVar {
                name,
                value: value.clone(),
                why: "expected a non-negative integer".into(),
            })
        };
        let world_size = number("WORLD_SIZE")?;
        if world_size == 0 {
            return Err(RendezvousError::BadVar {
                name: "WORLD_SIZE",
                value: "0".into(),
                why: "a run has at least one rank".into(),
            });
        }
        let rank = number("RANK")?;
        if rank >= world_size {
            return Err(RendezvousError::BadVar {
                name: "RANK",
                value: rank.to_string(),
                why: format!("ranks run from 0 to WORLD_SIZE − 1 = {}", world_size - 1),
            });
        }
        let local_rank = number("LOCAL_RANK")?;
        let master_addr = var("MASTER_ADDR")?;
        if master_addr.is_empty() {
            return Err(RendezvousError::BadVar {
                name: "MASTER_ADDR",
                value: master_addr,
                why: "expected the host name or address of rank 0".into(),
            });
        }
        let port = var("MASTER_PORT")?;
        let master_port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(RendezvousError::BadVar {
                    name: "MASTER_PORT",
                    value: port,
                    why: "expected a TCP port from 1 to 65535".into(),
                })
            }
        };
        Ok(Some(DistEnv {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
        }))
    }

    /// Runs the rendezvous: rank 0 serves `blob()` (called only on rank 0)
    /// and every rank returns the same bytes.
    pub fn exchange(
        &self,
        blob: impl FnOnce() -> Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, RendezvousError> {
        if self.rank == 0 {
            let server = RendezvousServer::bind(&self.master_addr, self.master_port)?;
            let blob = blob();
            server.serve(self.world_size, &blob, timeout)?;
            Ok(blob)
        } else {
            fetch(
                &self.master_addr,
                self.master_port,
                self.rank,
                self.world_size,
                timeout,
            )
        }
    }
}

/// Rank 0's listening socket.
pub struct RendezvousServer {
    listener: TcpListener,
    addr: String,
}

impl RendezvousServer {
    /// Listens at `addr:port` (port 0 picks a free one, for tests).
    pub fn bind(addr: &str, port: u16) -> Result<RendezvousServer, RendezvousError> {
        let name = format!("{addr}:{port}");
        let listener = TcpListener::bind((addr, port)).map_err(|source| RendezvousError::Bind {
            addr: name.clone(),
            source,
        })?;
        let addr = match listener.local_addr() {
            Ok(a) => a.to_string(),
            Err(_) => name,
        };
        Ok(RendezvousServer { listener, addr })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Waits for ranks `1..world` and sends each one `blob`. Fails naming
    /// the ranks that did not arrive within `timeout`, after telling the
    /// waiting ones why.
    pub fn serve(
        self,
        world: usize,
        blob: &[u8],
        timeout: Duration,
    ) -> Result<(), RendezvousError> {
        let deadline = Instant::now() + timeout;
        let mut peers: Vec<Option<TcpStream>> = (0..world).map(|_| None).collect();
        let protocol = |peer: &SocketAddr, why: String| RendezvousError::Protocol {
            peer: peer.to_string(),
            why,
        };
        self.listener.set_nonblocking(true).map_err(|e| {
            protocol(
                &self.local_addr().unwrap_or(([0, 0, 0, 0], 0).into()),
                e.to_string(),
            )
        })?;
        while peers[1..].iter().any(Option::is_none) {
            let now = Instant::now();
            if now >= deadline {
                let missing: Vec<usize> = (1..world).filter(|&r| peers[r].is_none()).collect();
                let err = RendezvousError::PeersMissing {
                    addr: self.addr.clone(),
                    missing,
                    timeout,
                };
                for stream in peers.iter_mut().flatten() {
                    // Best effort: the peer may be gone too.
                    let _ = send(stream, 1, err.to_string().as_bytes());
                }
                return Err(err);
            }
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    let hello = stream
                        .set_nonblocking(false)
                        .and_then(|_| {
                            stream.set_read_timeout(Some(
                                (deadline - now).max(Duration::from_millis(100)),
                            ))
                        })
                        .and_then(|_| read_hello(&mut stream));
                    let (rank, their_world) = match hello {
                        Ok(Some(h)) => h,
                        // Not a cram rank (a port scanner, a stale process): ignore it.
                        Ok(None) | Err(_) => continue,
                    };
                    let refuse = if their_world != world {
                        Some(format!(
                            "rank {rank} was started with WORLD_SIZE={their_world}, rank 0 with {world}"
                        ))
                    } else if rank == 0 || rank >= world {
                        Some(format!(
                            "rank {rank} is not a valid rank of a {world}-rank run"
                        ))
                    } else if peers[rank].is_some() {
                        Some(format!("two processes claim rank {rank}"))
                    } else {
                        None
                    };
                    if let Some(message) = refuse {
                        let _ = send(&mut stream, 1, message.as_bytes());
                        for s in peers.iter_mut().flatten() {
                            let _ = send(s, 1, message.as_bytes());
                        }
                        return Err(protocol(&peer, message));
                    }
                    peers[rank] = Some(stream);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => {
                    return Err(protocol(
                        &self.local_addr().unwrap_or(([0, 0, 0, 0], 0).into()),
                        e.to_string(),
                    ))
                }
            }
        }
        for (rank, stream) in peers.iter_mut().enumerate().skip(1) {
            let stream = stream.as_mut().expect("every peer arrived");
            send(stream, 0, blob).map_err(|e| RendezvousError::Protocol {
                peer: format!("rank {rank}"),
                why: format!("sending the id failed: {e}"),
            })?;
        }
        Ok(())
    }
}

fn read_hello(stream: &mut TcpStream) -> std::io::Result<Option<(usize, usize)>> {
    let mut buf = [0u8; 16];
    stream.read_exact(&mut buf)?;
    if &buf[..8] != MAGIC {
        return Ok(None);
    }
    let rank = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes")) as usize;
    let world = u32::from_le_bytes(buf[12..16].try_into().expect("4 bytes")) as usize;
    Ok(Some((rank, world)))
}

fn send(stream: &mut TcpStream, status: u8, bytes: &[u8]) -> std::io::Result<()> {
    let mut msg = Vec::with_capacity(5 + bytes.len());
    msg.push(status);
    msg.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    msg.extend_from_slice(bytes);
    stream.write_all(&msg)?;
    stream.flush()
}

/// Rank `rank`'s side: connects to rank 0 (retrying until it listens),
/// announces itself and returns the blob once every rank has arrived.
pub fn fetch(
    addr: &str,
    port: u16,
    rank: usize,
    world: usize,
    timeout: Duration,
) -> Result<Vec<u8>, RendezvousError> {
    let name = format!("{addr}:{port}");
    let deadline = Instant::now() + timeout;
    let unreachable = |why: String| RendezvousError::MasterUnreachable {
        rank,
        addr: name.clone(),
        timeout,
        why,
    };
    let mut last_error = String::from("no attempt");
    let mut stream = loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(unreachable(format!(
                "rank 0 never answered (last error: {last_error})"
            )));
        }
        let targets: Vec<SocketAddr> = match (addr, port).to_socket_addrs() {
            Ok(t) => t.collect(),
            Err(e) => {
                last_error = format!("cannot resolve {addr}: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let attempt = targets.iter().find_map(|t| {
            TcpStream::connect_timeout(t, (deadline - now).min(Duration::from_secs(2)))
                .map_err(|e| last_error = e.to_string())
                .ok()
        });
        match attempt {
            Some(s) => break s,
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let io = |e: std::io::Error| unreachable(e.to_string());
    let mut hello = Vec::with_capacity(16);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&(rank as u32).to_le_bytes());
    hello.extend_from_slice(&(world as u32).to_le_bytes());
    stream.write_all(&hello).map_err(io)?;
    let left = deadline.saturating_duration_since(Instant::now());
    // Rank 0 answers by its own deadline; allow it a moment beyond ours to say why.
    stream
        .set_read_timeout(Some(left + Duration::from_secs(2)))
        .map_err(io)?;
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).map_err(|e| {
        unreachable(format!(
            "no answer from rank 0 ({e}); rank 0 answers once every rank has arrived"
        ))
    })?;
    let len = u32::from_le_bytes(head[1..5].try_into().expect("4 bytes")) as usize;
    if len > 1 << 20 {
        return Err(RendezvousError::Protocol {
            peer: name,
            why: format!("announced {len} bytes"),
        });
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).map_err(io)?;
    match head[0] {
        0 => Ok(body),
        _ => Err(RendezvousError::Refused {
            addr: name,
            message: String::from_utf8_lossy(&body).into_owned(),
        }),
    }
}
