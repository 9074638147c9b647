//! Data pipeline throughput in MB/s of text: the per-document stages one by
//! one (normalization, MinHash signature, WordPiece and byte-level BPE
//! encoding) and a whole `prepare` of a few megabytes. Reads the first
//! 4 MB of ../shared/data/english when present, a generated text otherwise.
//! Run with `cargo bench --bench data_pipeline`; the full-corpus run and its
//! comparison with Python `tokenizers` are in bench/RESULTS.md.

use std::path::Path;

use cram::data::{
    minhash_signature, normalize, prepare, split_documents, train_on, DocumentEncoder, InputSpec,
    Normalization, PrepareOptions, TokenizerKind,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const SAMPLE_BYTES: usize = 4 << 20;

/// English documents, or made-up ones when the shared data is absent.
fn sample() -> Vec<String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/english/english-mixed.txt");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(_) => {
            eprintln!("{} not found: benchmarking generated text", path.display());
            generated_text()
        }
    };
    let mut docs = split_documents(&text);
    let mut bytes = 0;
    docs.retain(|d| {
        bytes += d.len();
        bytes <= SAMPLE_BYTES
    });
    docs
}

fn generated_text() -> String {
    let words = [
        "the", "of", "and", "model", "language", "train", "budget", "data", "crammed", "token",
        "sequence", "compute", "with", "a", "day",
    ];
    let mut state = 1u64;
    let mut text = String::new();
    while text.len() < SAMPLE_BYTES {
        for w in 0..200 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            text.push_str(words[(state >> 33) as usize % words.len()]);
            text.push(if w % 17 == 16 { '.' } else { ' ' });
        }
        text.push_str("\n\n");
    }
    text
}

fn bytes(docs: &[String]) -> u64 {
    docs.iter().map(|d| d.len() as u64).sum()
}

fn stages(c: &mut Criterion) {
    let docs = sample();
    let mut group = c.benchmark_group("stage");
    group.throughput(Throughput::Bytes(bytes(&docs)));
    group.sample_size(10);
    group.bench_function("normalize nfkc", |b| {
        b.iter(|| {
            docs.iter()
                .map(|d| normalize(d.clone(), Normalization::Nfkc).0.len())
                .sum::<usize>()
        })
    });
    group.bench_function("minhash signature", |b| {
        b.iter(|| docs.iter().map(|d| minhash_signature(d)[0]).sum::<u32>())
    });
    for kind in [TokenizerKind::Wordpiece, TokenizerKind::Bpe] {
        let tokenizer = train_on(kind, &docs, 8192).expect("training on the sample");
        group.bench_function(format!("encode {} (fresh cache)", kind.name()), |b| {
            b.iter(|| {
                DocumentEncoder::new(&tokenizer)
                    .encode(&docs)
                    .map(|ids| ids.len())
            })
        });
    }
    group.finish();
}

fn whole_prepare(c: &mut Criterion) {
    let docs = sample();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let input = dir.path().join("sample.txt");
    std::fs::write(&input, docs.join("\n\n")).expect("writing the sample");
    let mut group = c.benchmark_group("prepare");
    group.throughput(Throughput::Bytes(bytes(&docs)));
    group.sample_size(10);
    group.bench_function("4 MB, vocabulary 8192, every stage", |b| {
        b.iter(|| {
            let opts = PrepareOptions {
                vocab_size: 8192,
                overwrite: true,
                max_tokens_per_char: Some(0.4),
                ..PrepareOptions::new(vec![InputSpec::from(input.clone())], dir.path().join("out"))
            };
            prepare(&opts).map(|m| m.splits.train.sequences)
        })
    });
    group.finish();
}

criterion_group!(benches, stages, whole_prepare);
criterion_main!(benches);
