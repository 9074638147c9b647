//! `cram data prepare` and `cram data stats` through the binary: weighted
//! inputs of different formats, the table of every stage's effect, and the
//! per-pass throughput.

mod common;

use common::cram;

use std::io::Write;
use std::path::Path;

/// `count` documents of words built from `letters`, each word from a
/// simple counter so that every document differs.
fn documents(letters: &[u8], count: usize, seed: usize) -> Vec<String> {
    (0..count)
        .map(|d| {
            (0..80)
                .map(|w| {
                    let mut n = (d + seed) * 7919 + w * 31;
                    let mut word = String::new();
                    for _ in 0..2 + n % 3 {
                        word.push(letters[n % letters.len()] as char);
                        n /= letters.len();
                    }
                    word
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn write_gzip_jsonl(path: &Path, docs: &[String]) {
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    for doc in docs {
        writeln!(encoder, "{}", serde_json::json!({ "content": doc })).unwrap();
    }
    encoder.finish().unwrap();
}

#[test]
fn prepare_with_weighted_inputs_then_stats_shows_every_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let books = tmp.path().join("books.jsonl.gz");
    write_gzip_jsonl(&books, &documents(b"abcdefg", 150, 0));
    let web = tmp.path().join("web.txt");
    let mut web_docs = documents(b"hijklmn", 150, 1);
    web_docs.push(web_docs[0].clone());
    std::fs::write(&web, web_docs.join("\n\n")).unwrap();
    let out = tmp.path().join("data");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("old.txt"), "something").unwrap();
    let books_arg = format!("{}:0.5", books.display());
    let web_arg = format!("{}:0.5", web.display());
    let args = [
        "data",
        "prepare",
        "--input",
        &books_arg,
        "--input",
        &web_arg,
        "--out",
        out.to_str().unwrap(),
        "--text-field",
        "content",
        "--vocab-size",
        "200",
        "--preset",
        "tiny",
        "--set",
        "data.compression_filter=false",
        "--quiet",
    ];
    let (code, _, stderr) = cram(&args);
    assert_eq!(code, 1, "an existing output needs --overwrite: {stderr}");
    assert!(stderr.contains("--overwrite"), "{stderr}");

    let mut forced = args.to_vec();
    forced.push("--force");
    let (code, stdout, stderr) = cram(&forced);
    assert_eq!(code, 0, "{stderr}");
    for pass in ["clean", "mix", "tokenizer train", "encode", "sort", "MB/s"] {
        assert!(stdout.contains(pass), "no {pass} in:\n{stdout}");
    }

    let (code, stats, stderr) = cram(&["data", "stats", out.to_str().unwrap(), "--verify"]);
    assert_eq!(code, 0, "{stderr}");
    for stage in [
        "read",
        "normalize",
        "min-length",
        "dedup-exact",
        "near-dup",
        "mix",
        "split",
        "tokenizer",
        "tokenize",
        "compression-filter",
        "pack",
        "sort",
        "dropped %",
        "books.jsonl.gz",
        "web.txt",
        "train order: unigram",
        "every shard matches",
    ] {
        assert!(stats.contains(stage), "no {stage} in:\n{stats}");
    }
    let exact = stats
        .lines()
        .find(|l| l.starts_with("dedup-exact"))
        .unwrap();
    let cells: Vec<&str> = exact.split_whitespace().collect();
    assert_eq!(cells[1..4], ["301", "300", "1"], "{exact}");
}
