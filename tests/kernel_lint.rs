//! The CUDA kernels through the host C++ compiler, on the CPU: CI has no GPU
//! and no NVRTC, so without this a kernel change is first compiled on a GPU
//! machine. The sources are compiled as C++ behind a shim that turns the
//! CUDA keywords and intrinsics into host equivalents (nothing runs), with
//! the warnings NVRTC does not give made errors. It exists because bad66f2
//! made a helper call itself instead of zeroing the fused attention's
//! accumulators, which NVRTC compiled silently and GCC's
//! -Winfinite-recursion names at once.
//!
//! The inline PTX (`asm volatile(...)`) cannot go through an x86 compiler:
//! each statement is replaced by a call that only reads and writes its
//! operands, so the C++ around it is still checked.

use std::path::Path;
use std::process::Command;

/// Host stand-ins for what NVRTC provides. Only declarations matter: the
/// object is never linked or run.
const SHIM: &str = r#"
#include <cmath>
#include <cstring>
#define __device__
#define __global__
#define __forceinline__ inline
#define __shared__
#define __restrict__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
struct cram_lint_dim3 { unsigned x, y, z; };
struct uint4 { unsigned x, y, z, w; };
struct float4 { float x, y, z, w; };
struct float2 { float x, y; };
struct uint2 { unsigned x, y; };
float2 make_float2(float x, float y);
float4 make_float4(float x, float y, float z, float w);
uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w);
uint2 make_uint2(unsigned x, unsigned y);
void __trap();
extern cram_lint_dim3 threadIdx, blockIdx, blockDim, gridDim;
void __syncthreads();
void __syncwarp();
float __shfl_xor_sync(unsigned mask, float v, int lane);
float __shfl_sync(unsigned mask, float v, int lane);
float __expf(float x);
float rsqrtf(float x);
float __int_as_float(int i);
float __uint_as_float(unsigned u);
unsigned __float_as_uint(float f);
unsigned long long __cvta_generic_to_shared(const void* p);
float atomicAdd(float* p, float v);
template <typename T> T min(T a, T b) { return a < b ? a : b; }
template <typename T> T max(T a, T b) { return a < b ? b : a; }
template <typename... A> void cram_lint_asm(const char*, A&&...);
"#;

/// g++ or c++. A machine without one fails the lint rather than passing it
/// unchecked (`.ci/run` installs g++ where it is missing).
fn host_compiler() -> &'static str {
    ["g++", "c++"]
        .into_iter()
        .find(|cc| {
            Command::new(cc)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("no host C++ compiler (g++ or c++): install one (apt-get install g++) to lint the CUDA kernels")
}

/// `asm volatile("..." : outputs : inputs);` (or `asm(...)`, a statement the
/// compiler may move or drop) → `cram_lint_asm("...", operands);` (the
/// operands' constraint strings dropped, their expressions kept).
fn replace_inline_ptx(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some((at, opener)) = next_asm(rest) {
        out.push_str(&rest[..at]);
        let body_start = at + opener.len();
        let end =
            matching_paren(&rest[body_start..]).expect("asm volatile( is closed") + body_start;
        out.push_str("cram_lint_asm(");
        out.push_str(&asm_operands(&rest[body_start..end]));
        out.push(')');
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Where the next inline-assembly statement starts in `text`, and its opener
/// (`asm(` only where no identifier character comes before it).
fn next_asm(text: &str) -> Option<(usize, &'static str)> {
    let volatile = text.find("asm volatile(").map(|at| (at, "asm volatile("));
    let plain = text.match_indices("asm(").map(|(at, _)| at).find(|&at| {
        text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
    });
    match (volatile, plain) {
        (Some(v), Some(p)) if p < v.0 => Some((p, "asm(")),
        (Some(v), _) => Some(v),
        (None, p) => p.map(|at| (at, "asm(")),
    }
}

/// Index of the `)` that closes an opening parenthesis just before `text`.
fn matching_paren(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '(' if !in_string => depth += 1,
            ')' if !in_string && depth == 0 => return Some(i),
            ')' if !in_string => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The template string, then each operand's expression: `"=r"(x)` → `x`.
fn asm_operands(body: &str) -> String {
    let mut parts = split_outside_strings(body, ':').into_iter();
    let template = parts.next().unwrap_or("\"\"").trim().to_string();
    let mut args = vec![template];
    for section in parts {
        let mut rest = section;
        while let Some(open) = rest.find("\"(") {
            let expr_start = open + 2;
            let close =
                matching_paren(&rest[expr_start..]).expect("operand is closed") + expr_start;
            args.push(rest[expr_start..close].trim().to_string());
            rest = &rest[close + 1..];
        }
    }
    args.join(", ")
}

/// `text` cut at each `sep` that is not inside a string literal (a PTX
/// template may hold colons).
fn split_outside_strings(text: &str, sep: char) -> Vec<&str> {
    let (mut parts, mut start, mut in_string) = (Vec::new(), 0, false);
    for (i, c) in text.char_indices() {
        if c == '"' {
            in_string = !in_string;
        } else if c == sep && !in_string {
            parts.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Both sides of the kernels' `#if __CUDA_ARCH__ >= …` switches: the
/// Hopper instructions (as calls, see `replace_inline_ptx`) and the portable
/// fallbacks (the macro undefined, as 0), and the sm_90a-only code (wgmma,
/// under `__CUDA_ARCH_FEAT_SM90_ALL`).
#[test]
fn kernels_compile_as_host_cpp_without_warnings() {
    let cc = host_compiler();
    let dir = tempfile::tempdir().unwrap();
    let mut program = String::from(SHIM);
    for (name, text) in cram::backend::cuda::kernel_sources() {
        program.push_str(&format!("\n// ---- {name}\n"));
        program.push_str(&replace_inline_ptx(text));
    }
    let path = dir.path().join("kernels.cpp");
    std::fs::write(&path, &program).unwrap();
    let archs: [&[&str]; 3] = [
        &[],
        &["-D__CUDA_ARCH__=900"],
        &["-D__CUDA_ARCH__=900", "-D__CUDA_ARCH_FEAT_SM90_ALL"],
    ];
    for arch in archs {
        let out = compile(cc, &path, arch);
        assert!(
            out.status.success(),
            "the kernels do not compile cleanly as host C++ ({}, {arch:?}):\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Compiles to assembly (no assembler: the PTX is gone, but nothing is
/// linked either) with the middle-end warnings on, which need optimisation.
fn compile(cc: &str, path: &Path, define: &[&str]) -> std::process::Output {
    Command::new(cc)
        .args(["-std=c++17", "-O1", "-S", "-o", "/dev/null"])
        .args(define)
        .args(["-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"])
        // `#pragma unroll` is NVRTC's; the host compiler would only say it ignores it.
        .arg("-Wno-unknown-pragmas")
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn the_lint_catches_a_helper_that_calls_itself() {
    let cc = host_compiler();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.cpp");
    let bad = "template <int D> __device__ __forceinline__ void zero_rows(float (*acc)[4]) {\n\
               zero_rows<D>(acc);\n}\n\
               extern \"C\" __global__ void k(float* out) { float a[2][4]; zero_rows<16>(a); out[0] = a[0][0]; }\n";
    std::fs::write(&path, format!("{SHIM}{bad}")).unwrap();
    let out = compile(cc, &path, &[]);
    assert!(!out.status.success(), "bad66f2's recursion passed the lint");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("infinite-recursion"), "{err}");
}

#[test]
fn inline_ptx_becomes_a_call_on_its_operands() {
    let src =
        "asm volatile(\"L1: mma {%0}, {%1};\\n\" : \"+f\"(c[0]) : \"r\"(a[1]), \"r\"(f(b, 2)));";
    assert_eq!(
        replace_inline_ptx(src),
        "cram_lint_asm(\"L1: mma {%0}, {%1};\\n\", c[0], a[1], f(b, 2));"
    );
}

#[test]
fn plain_asm_becomes_a_call_and_names_ending_in_asm_stay() {
    let src = "float r; asm(\"ex2 %0, %1;\" : \"=f\"(r) : \"f\"(x)); wgmma_asm(y);";
    assert_eq!(
        replace_inline_ptx(src),
        "float r; cram_lint_asm(\"ex2 %0, %1;\", r, x); wgmma_asm(y);"
    );
}
