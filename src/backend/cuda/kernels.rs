//! Our CUDA kernels: the sources in `kernels/*.cu`, compiled by NVRTC into a
//! cubin for the GPU's architecture once and cached on disk under the hash
//! of the sources and the architecture, so a second start compiles nothing.

use std::collections::HashMap;
use std::ffi::{c_char, CString};
use std::path::PathBuf;

use cudarc::driver::{result as drv, sys};
use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys};
use sha2::{Digest, Sha256};

use super::CudaError;

/// The kernel sources, concatenated in this order into one program.
const SOURCES: [(&str, &str); 11] = [
    ("common.cuh", include_str!("kernels/common.cuh")),
    ("elementwise.cu", include_str!("kernels/elementwise.cu")),
    ("embedding.cu", include_str!("kernels/embedding.cu")),
    // Before the norms: their forward can write its output's E4M3 copy.
    ("fp8.cu", include_str!("kernels/fp8.cu")),
    ("norm.cu", include_str!("kernels/norm.cu")),
    ("attention.cu", include_str!("kernels/attention.cu")),
    (
        "fused_attention.cu",
        include_str!("kernels/fused_attention.cu"),
    ),
    (
        "flash_attention.cu",
        include_str!("kernels/flash_attention.cu"),
    ),
    ("flash_wgmma.cu", include_str!("kernels/flash_wgmma.cu")),
    ("loss.cu", include_str!("kernels/loss.cu")),
    ("optim.cu", include_str!("kernels/optim.cu")),
];

/// The kernel sources as NVRTC compiles them, file name and text, in order
/// (for the host-compiler lint in tests/kernel_lint.rs).
pub fn sources() -> &'static [(&'static str, &'static str)] {
    &SOURCES
}

/// Every `extern "C"` kernel the backend launches, besides the attention
/// kernels that `ops::FUSED_ATTENTION` and `ops::FLASH_ATTENTION` name.
const NAMES: &[&str] = &[
    "convert",
    "add",
    "add_scalar",
    "activation_forward",
    "activation_backward",
    "glu_forward8",
    "glu_forward",
    "glu_forward_scalar",
    "glu_backward8",
    "glu_backward",
    "glu_backward_scalar",
    "dropout",
    "add_bias",
    "bias_backward",
    "embedding_forward",
    "embedding_backward",
    "learned_positions_forward",
    "learned_positions_backward",
    "sinusoid_table",
    "sinusoidal_positions_forward",
    "sinusoidal_positions_backward",
    "rotary_table",
    "rotary",
    "rotary4",
    "norm_forward",
    "fp8_amax_partials",
    "fp8_cast",
    "norm_backward",
    "norm_backward_1",
    "norm_backward_2",
    "norm_backward_3",
    "norm_backward_4",
    "qkv_to_heads",
    "heads_to_qkv",
    "heads_to_rows",
    "rows_to_heads",
    "attention_softmax",
    "attention_softmax_backward",
    "flash_backward_delta",
    "flash_backward_store_dq",
    "flash_backward_store_dq4",
    "flash_backward_store_dq_rotary4",
    "gather_rows",
    "scatter_rows",
    "cross_entropy",
    "cross_entropy_held",
    "top1_hits",
    "mse_loss",
    "sum_partials",
    "finish_sum",
    "adamw",
];

pub fn program_source() -> String {
    let mut src = String::new();
    for (name, text) in SOURCES {
        src.push_str(&format!("// ---- {name}\n{text}\n"));
    }
    src
}

pub struct Kernels {
    functions: HashMap<&'static str, Function>,
}

#[derive(Clone, Copy)]
struct Function(sys::CUfunction);
// SAFETY: a CUfunction is an immutable handle valid for the module's lifetime
// (the module is never unloaded).
unsafe impl Send for Function {}
unsafe impl Sync for Function {}

impl Kernels {
    /// Loads the kernels for compute capability `major.minor`, compiling them
    /// on a cache miss.
    pub fn load(major: i32, minor: i32) -> Result<Kernels, CudaError> {
        let arch = architecture(major, minor);
        let src = program_source();
        let cubin = cached_cubin(&src, &arch)?;
        // SAFETY: a cubin NVRTC produced for this GPU's architecture.
        let module = unsafe { drv::module::load_data(cubin.as_ptr() as *const _) }
            .map_err(|e| CudaError::Compile(format!("loading the kernel module: {e:?}")))?;
        let mut functions = HashMap::new();
        let fused = super::ops::FUSED_ATTENTION
            .iter()
            .flat_map(|f| [f.forward, f.backward])
            .chain(super::ops::FLASH_ATTENTION.iter().flat_map(|f| {
                [f.forward, f.backward]
                    .into_iter()
                    .chain(f.forward_m2)
                    .chain(f.backward_k2)
                    .chain(f.forward_wgmma)
                    .chain(f.backward_wgmma)
            }));
        for name in NAMES.iter().copied().chain(fused) {
            let c = CString::new(name).expect("kernel name");
            // SAFETY: the module is loaded and stays loaded.
            let f = unsafe { drv::module::get_function(module, c) }
                .map_err(|e| CudaError::Compile(format!("kernel {name} missing: {e:?}")))?;
            functions.insert(name, Function(f));
        }
        Ok(Kernels { functions })
    }

    /// Lets kernel `name` use `bytes` of dynamic shared memory (above the
    /// default 48 KiB); false when the GPU has less.
    pub fn allow_shared_memory(&self, name: &str, bytes: usize) -> bool {
        let attr = sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
        // SAFETY: the function exists; the driver checks the value.
        unsafe { drv::function::set_function_attribute(self.function(name), attr, bytes as i32) }
            .is_ok()
    }

    pub fn function(&self, name: &str) -> sys::CUfunction {
        self.functions
            .get(name)
            .unwrap_or_else(|| panic!("kernel {name} is not in the kernel list"))
            .0
    }
}

/// NVRTC's name for the architecture; Hopper gets its `a` variant.
fn architecture(major: i32, minor: i32) -> String {
    if has_wgmma(major, minor) {
        "sm_90a".into()
    } else {
        format!("sm_{major}{minor}")
    }
}

/// Whether the program is built with Hopper's wgmma (`flash_wgmma.cu`'s
/// kernels; elsewhere they exist and trap).
pub fn has_wgmma(major: i32, minor: i32) -> bool {
    (major, minor) == (9, 0)
}

/// Where compiled kernels are kept: `$CRAM_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/cram`, else `~/.cache/cram`, each with `kernels/` below.
fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("CRAM_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("cram")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/cram")))?;
    Some(base.join("kernels"))
}

fn cached_cubin(src: &str, arch: &str) -> Result<Vec<u8>, CudaError> {
    let digest = Sha256::new()
        .chain_update(src.as_bytes())
        .chain_update(arch.as_bytes())
        .finalize();
    let key: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    let path = cache_dir().map(|d| d.join(format!("{key}-{arch}.cubin")));
    if let Some(bytes) = path.as_ref().and_then(|p| std::fs::read(p).ok()) {
        return Ok(bytes);
    }
    let cubin = compile(src, arch)?;
    if let Some(path) = path {
        // A cache that cannot be written only costs a compile next time.
        let _ = store(&path, &cubin);
    }
    Ok(cubin)
}

/// Writes under a temporary name and renames, so a reader never sees half a
/// file. Not `fsio::write_atomically`: the temporary name carries the PID
/// (several ranks may compile the same kernels at once, and one fixed name
/// would let their writes interleave), and nothing is synced (a cache file
/// lost in a crash is compiled again).
fn store(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn compile(src: &str, arch: &str) -> Result<Vec<u8>, CudaError> {
    let err = |what: &str, e: &dyn std::fmt::Debug| CudaError::Compile(format!("{what}: {e:?}"));
    let c_src = CString::new(src).expect("kernel source has no NUL");
    let name = CString::new("cram.cu").expect("name");
    let prog = nvrtc::create_program(&c_src, Some(&name)).map_err(|e| err("nvrtc", &e))?;
    let options = [
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        "-default-device".to_string(),
        "--use_fast_math".to_string(),
    ];
    // SAFETY: prog is a live program; options are valid strings.
    let compiled = unsafe { nvrtc::compile_program(prog, &options) };
    if let Err(e) = compiled {
        // SAFETY: as above.
        let log = unsafe { nvrtc::get_program_log(prog) }.unwrap_or_default();
        let log: Vec<u8> = log
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        unsafe {
            let _ = nvrtc::destroy_program(prog);
        }
        return Err(CudaError::Compile(format!(
            "{e:?}\n{}",
            String::from_utf8_lossy(&log)
        )));
    }
    let mut size = 0usize;
    // SAFETY: the program compiled; the buffer has the reported size.
    let cubin = unsafe {
        nvrtc_sys::nvrtcGetCUBINSize(prog, &mut size)
            .result()
            .map_err(|e| err("cubin size", &e))?;
        let mut buf = vec![0u8; size];
        nvrtc_sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char)
            .result()
            .map_err(|e| err("cubin", &e))?;
        let _ = nvrtc::destroy_program(prog);
        buf
    };
    Ok(cubin)
}
