//! Elementwise ops: activations, gated linear units, residual adds and
//! dropout (kernels in `kernels/elementwise.cu`).

use crate::backend::cuda::{f32_arg, vector_aligned, Cuda, CudaBuf};
use crate::backend::{Activation, ActivationOps};

fn act_code(act: Activation) -> u64 {
    match act {
        Activation::Gelu => 0,
        Activation::Silu => 1,
    }
}

impl ActivationOps for Cuda {
    fn activation_forward(&self, out: &mut CudaBuf, inp: &CudaBuf, act: Activation) {
        let n = out.len;
        self.timed("activation", || {
            self.launch_each(
                "activation_forward",
                n,
                &[
                    out.ptr(),
                    out.bf(),
                    inp.ptr(),
                    inp.bf(),
                    act_code(act),
                    n as u64,
                ],
            )
        });
    }

    fn activation_backward(
        &self,
        dinp: &mut CudaBuf,
        dout: &CudaBuf,
        inp: &CudaBuf,
        act: Activation,
    ) {
        let n = dinp.len;
        self.timed("activation_backward", || {
            self.launch_each(
                "activation_backward",
                n,
                &[
                    dinp.ptr(),
                    dinp.bf(),
                    dout.ptr(),
                    dout.bf(),
                    inp.ptr(),
                    inp.bf(),
                    act_code(act),
                    n as u64,
                ],
            )
        });
    }

    fn glu_forward(&self, out: &mut CudaBuf, inp: &CudaBuf, act: Activation, half: usize) {
        let n = inp.len / 2;
        if !self.glu_fits(inp.len) {
            return;
        }
        let (name, per_thread) = Self::glu_kernel(Glu::Forward, half, &[out.ptr(), inp.ptr()]);
        self.timed("glu_forward", || {
            self.launch_vec(
                name,
                n,
                per_thread,
                &[
                    out.ptr(),
                    out.bf(),
                    inp.ptr(),
                    inp.bf(),
                    act_code(act),
                    half as u64,
                    n as u64,
                ],
            )
        });
    }

    fn glu_backward(
        &self,
        dinp: &mut CudaBuf,
        dout: &CudaBuf,
        inp: &CudaBuf,
        act: Activation,
        half: usize,
    ) {
        let n = inp.len / 2;
        if !self.glu_fits(inp.len) {
            return;
        }
        let (name, per_thread) =
            Self::glu_kernel(Glu::Backward, half, &[dinp.ptr(), dout.ptr(), inp.ptr()]);
        self.timed("glu_backward", || {
            self.launch_vec(
                name,
                n,
                per_thread,
                &[
                    dinp.ptr(),
                    dinp.bf(),
                    dout.ptr(),
                    dout.bf(),
                    inp.ptr(),
                    inp.bf(),
                    act_code(act),
                    half as u64,
                    n as u64,
                ],
            )
        });
    }

    fn add(&self, out: &mut CudaBuf, a: &CudaBuf, b: &CudaBuf) {
        let n = out.len;
        let vec4 = n.is_multiple_of(4) && vector_aligned(&[out.ptr(), a.ptr(), b.ptr()]);
        self.timed("add", || {
            self.launch_vec(
                if vec4 { "add" } else { "add_scalar" },
                n,
                if vec4 { 4 } else { 1 },
                &[
                    out.ptr(),
                    out.bf(),
                    a.ptr(),
                    a.bf(),
                    b.ptr(),
                    b.bf(),
                    n as u64,
                ],
            )
        });
    }

    fn dropout_forward(&self, out: &mut CudaBuf, inp: &CudaBuf, p: f32, seed: u64) {
        self.timed("dropout", || self.dropout(out, inp, p, seed));
    }

    fn dropout_backward(&self, dinp: &mut CudaBuf, dout: &CudaBuf, p: f32, seed: u64) {
        self.timed("dropout", || self.dropout(dinp, dout, p, seed));
    }
}

impl Cuda {
    /// Whether the GLU kernels can index an input of `len` values: they
    /// divide by the row width in 32 bits (the fast division), so the input
    /// must stay below 2³². A larger one (a micro-batch of about 10k
    /// crammed-bert sequences) is recorded as a device failure that names
    /// the size, not a panic: the caller then says which setting to lower.
    fn glu_fits(&self, len: usize) -> bool {
        const LIMIT: usize = (1 << 32) - 1;
        if len <= LIMIT {
            return true;
        }
        self.fault.record(crate::backend::DeviceError::TooLarge {
            what: "the GLU feed-forward's input",
            elements: len,
            limit: LIMIT,
        });
        false
    }

    /// The GLU kernel for `half` columns and its values a thread: eight
    /// (16-byte bf16 accesses) or four where a group never straddles a row
    /// and the buffers allow 16-byte accesses, else one. Eight measured
    /// against four on an H100: see bench/RESULTS.md, sixteenth session.
    fn glu_kernel(pass: Glu, half: usize, ptrs: &[u64]) -> (&'static str, usize) {
        let aligned = vector_aligned(ptrs);
        let [wide, four, scalar] = match pass {
            Glu::Forward => ["glu_forward8", "glu_forward", "glu_forward_scalar"],
            Glu::Backward => ["glu_backward8", "glu_backward", "glu_backward_scalar"],
        };
        if aligned && half.is_multiple_of(8) {
            (wide, 8)
        } else if aligned && half.is_multiple_of(4) {
            (four, 4)
        } else {
            (scalar, 1)
        }
    }

    fn dropout(&self, out: &mut CudaBuf, inp: &CudaBuf, p: f32, seed: u64) {
        let n = out.len;
        self.launch_each(
            "dropout",
            n,
            &[
                out.ptr(),
                out.bf(),
                inp.ptr(),
                inp.bf(),
                f32_arg(p),
                seed,
                n as u64,
            ],
        );
    }
}

/// The GLU pass a kernel is picked for.
#[derive(Clone, Copy)]
enum Glu {
    Forward,
    Backward,
}
