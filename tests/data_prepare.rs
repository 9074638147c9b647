//! End-to-end tests of `cram::data::prepare` and `TokenStore`: a real English
//! sample (2 MB of the built-in corpus that `scripts/setup` installs), a
//! generated corpus, and bad inputs that must fail cleanly and leave nothing
//! behind.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use cram::data::{prepare, DataError, InputSpec, Manifest, PrepareOptions, Split, TokenStore};

/// A generated corpus of made-up words with a Zipf-like skew, so that BPE
/// finds merges; `documents` documents separated by blank lines.
fn synthetic_corpus(path: &Path, documents: usize) {
    const SYLLABLES: [&str; 16] = [
        "ka", "lo", "mi", "ter", "san", "do", "ri", "ven", "tu", "pe", "ro", "na", "shi", "gal",
        "bo", "ew",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % n
    };
    let mut text = String::new();
    for _ in 0..documents {
        let words = 30 + next(50);
        for w in 0..words {
            let syllables = 1 + next(3).min(next(3));
            for _ in 0..syllables {
                text.push_str(SYLLABLES[next(SYLLABLES.len()).min(next(SYLLABLES.len()))]);
            }
            text.push(if w % 11 == 10 { '\n' } else { ' ' });
        }
        text.push_str("end.\n\n");
    }
    std::fs::write(path, text).unwrap();
}

/// Small-vocabulary settings: the compression filter is off (a vocabulary
/// of 2048 spends about 0.3 tokens per character on plain English) and the
/// train split stays in packed order, so that tests can follow documents.
fn options(inputs: Vec<PathBuf>, out: PathBuf) -> PrepareOptions {
    PrepareOptions {
        vocab_size: 2048,
        seq_len: 64,
        val_fraction: 0.1,
        shard_sequences: 1000,
        seed: 1,
        max_tokens_per_char: None,
        unigram_sort: false,
        ..PrepareOptions::new(inputs.into_iter().map(InputSpec::from).collect(), out)
    }
}

fn small_options(inputs: Vec<PathBuf>, out: PathBuf) -> PrepareOptions {
    PrepareOptions {
        vocab_size: 200,
        seq_len: 32,
        shard_sequences: 50,
        ..options(inputs, out)
    }
}

fn sequences(store: &TokenStore, split: Split) -> Vec<Vec<u32>> {
    (0..store.len(split))
        .map(|i| {
            let mut seq = vec![0; store.seq_len()];
            store.read(split, i, &mut seq);
            seq
        })
        .collect()
}

/// The documents of a split as token lists: the stream without [CLS] and
/// padding, cut at [SEP].
fn documents(store: &TokenStore, split: Split) -> Vec<Vec<u32>> {
    let special = store.special();
    let mut docs = vec![Vec::new()];
    for seq in sequences(store, split) {
        for &t in &seq[1..] {
            if t == special.sep {
                docs.push(Vec::new());
            } else if t != special.pad {
                docs.last_mut().unwrap().push(t);
            }
        }
    }
    docs.pop();
    docs
}

/// Every entry of `dir`, by name.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn english_sample_prepares_into_a_readable_store() {
    let dir = tempfile::tempdir().unwrap();
    let input = common::english_slice(dir.path(), 2_000_000);
    let out = dir.path().join("prepared");
    let manifest = prepare(&options(vec![input], out.clone())).unwrap();
    let store = TokenStore::open(&out).unwrap();
    assert_eq!(store.manifest(), &manifest);
    assert_eq!(Manifest::read(&out).unwrap(), manifest);

    assert_eq!(
        store.vocab_size(),
        2048,
        "the trained vocabulary hits the size"
    );
    assert_eq!(manifest.dtype.to_string(), "u16");
    assert_eq!(manifest.tokenizer.kind, "wordpiece");
    assert!(manifest.tokenizer.lowercase);
    let special = store.special();
    assert_eq!(
        [
            special.pad,
            special.unk,
            special.cls,
            special.sep,
            special.mask
        ],
        [0, 1, 2, 3, 4]
    );
    let stages: Vec<&str> = manifest.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        stages,
        [
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
            "pack"
        ]
    );

    for split in Split::ALL {
        let info = manifest.splits.get(split);
        assert!(info.sequences > 0, "{split:?} is empty");
        assert_eq!(store.len(split) as u64, info.sequences);
        assert_eq!(info.tokens + info.padding, info.sequences * 64);
        let seqs = sequences(&store, split);
        assert!(
            seqs.iter().all(|s| s[0] == special.cls),
            "every sequence starts with [CLS]"
        );
        assert!(seqs
            .iter()
            .flatten()
            .all(|&t| (t as usize) < store.vocab_size()));
        let counts = store.unigram_counts(split);
        assert_eq!(counts.len(), 2048);
        assert_eq!(counts.iter().sum::<u64>(), info.sequences * 64);
        assert_eq!(counts[special.cls as usize], info.sequences);
        assert_eq!(counts[special.pad as usize], info.padding);
    }
    let train = &manifest.splits.train;
    assert!(
        train.shards.len() > 1,
        "1000 sequences per shard makes several"
    );
    let val_docs = manifest.splits.val.documents as f64;
    let share = val_docs / (val_docs + train.documents as f64);
    assert!((0.04..0.2).contains(&share), "val share {share}");

    let tokenizer = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    assert_eq!(tokenizer.get_vocab_size(true), 2048);
    let mut seq = vec![0; 64];
    store.read(Split::Train, store.len(Split::Train) / 2, &mut seq);
    let text = tokenizer.decode(&seq, true).unwrap();
    assert_eq!(text, text.to_lowercase(), "{text}");
    let common = [
        "the", "and", "of", "to", "a", "in", "is", "that", "it", "for",
    ];
    let found = text
        .split_whitespace()
        .filter(|w| common.contains(w))
        .count();
    assert!(found >= 3, "not English-looking: {text}");

    store.verify().unwrap();
}

#[test]
fn corrupt_truncated_and_missing_shards_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    synthetic_corpus(&input, 300);
    let out = dir.path().join("prepared");
    prepare(&small_options(vec![input], out.clone())).unwrap();
    let shard = out.join("train-00001.bin");
    let mut bytes = std::fs::read(&shard).unwrap();
    TokenStore::open(&out).unwrap().verify().unwrap();

    bytes[100] ^= 0x01;
    std::fs::write(&shard, &bytes).unwrap();
    let err = TokenStore::open(&out).unwrap().verify().unwrap_err();
    assert!(matches!(err, DataError::ShardChecksum { .. }), "{err}");
    assert!(err.to_string().contains("train-00001.bin"), "{err}");

    std::fs::write(&shard, &bytes[..bytes.len() - 2]).unwrap();
    let err = TokenStore::open(&out).err().unwrap();
    assert!(matches!(err, DataError::ShardSize { .. }), "{err}");
    assert!(err.to_string().contains("train-00001.bin"), "{err}");

    std::fs::remove_file(&shard).unwrap();
    let err = TokenStore::open(&out).err().unwrap();
    assert!(matches!(err, DataError::ShardOpen { .. }), "{err}");
    assert!(err.to_string().contains("train-00001.bin"), "{err}");

    let err = TokenStore::open(dir.path()).err().unwrap();
    assert!(matches!(err, DataError::ManifestRead { .. }), "{err}");
    assert!(err.to_string().contains("manifest.json"), "{err}");
}

#[test]
fn english_sample_verify_fails_after_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let input = common::english_slice(dir.path(), 2_000_000);
    let out = dir.path().join("prepared");
    prepare(&options(vec![input], out.clone())).unwrap();
    TokenStore::open(&out).unwrap().verify().unwrap();
    let shard = out.join("val-00000.bin");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[7] ^= 0x80;
    std::fs::write(&shard, &bytes).unwrap();
    let err = TokenStore::open(&out).unwrap().verify().unwrap_err();
    assert!(err.to_string().contains("val-00000.bin"), "{err}");
}

#[test]
fn english_sample_train_and_val_documents_are_disjoint() {
    let dir = tempfile::tempdir().unwrap();
    let input = common::english_slice(dir.path(), 2_000_000);
    let out = dir.path().join("prepared");
    let manifest = prepare(&options(vec![input], out.clone())).unwrap();
    let store = TokenStore::open(&out).unwrap();
    let train = documents(&store, Split::Train);
    let val = documents(&store, Split::Val);
    assert_eq!(train.len() as u64, manifest.splits.train.documents);
    assert_eq!(val.len() as u64, manifest.splits.val.documents);
    let train: HashSet<Vec<u32>> = train.into_iter().collect();
    let shared = val.iter().filter(|doc| train.contains(*doc)).count();
    assert_eq!(shared, 0, "{shared} documents are in both splits");
}

#[test]
fn english_sample_same_seed_gives_identical_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = common::english_slice(dir.path(), 2_000_000);
    let run = |name: &str, seed: u64| {
        let out = dir.path().join(name);
        let opts = PrepareOptions {
            seed,
            ..options(vec![input.clone()], out.clone())
        };
        prepare(&opts).unwrap();
        out
    };
    let a = run("a", 1);
    let b = run("b", 1);
    assert_eq!(entries(&a), entries(&b));
    for name in entries(&a) {
        let same = std::fs::read(a.join(&name)).unwrap() == std::fs::read(b.join(&name)).unwrap();
        assert!(same, "{name} differs between two runs with the same seed");
    }
    let c = run("c", 2);
    assert_ne!(
        std::fs::read(a.join("val-00000.bin")).unwrap(),
        std::fs::read(c.join("val-00000.bin")).unwrap(),
        "another seed picks other validation documents"
    );
}

#[test]
fn a_reused_tokenizer_gives_the_same_shards() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    synthetic_corpus(&input, 200);
    let first = dir.path().join("first");
    let trained = prepare(&small_options(vec![input.clone()], first.clone())).unwrap();
    let second = dir.path().join("second");
    let opts = PrepareOptions {
        tokenizer: Some(first.join("tokenizer.json")),
        vocab_size: 0,
        ..small_options(vec![input], second.clone())
    };
    let reused = prepare(&opts).unwrap();
    assert_eq!(reused.tokenizer.vocab_size, trained.tokenizer.vocab_size);
    assert_eq!(reused.tokenizer.special, trained.tokenizer.special);
    assert!(reused.tokenizer.reused_from.is_some());
    assert_eq!(reused.splits, trained.splits);
}

#[test]
fn without_cls_sequences_are_the_plain_stream() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    synthetic_corpus(&input, 100);
    let out = dir.path().join("prepared");
    let opts = PrepareOptions {
        cls_first: false,
        val_fraction: 0.0,
        ..small_options(vec![input], out.clone())
    };
    let manifest = prepare(&opts).unwrap();
    assert!(!manifest.cls_first);
    assert_eq!(manifest.splits.val.sequences, 0);
    assert!(manifest.splits.val.shards.is_empty());
    let store = TokenStore::open(&out).unwrap();
    let special = store.special();
    let seqs = sequences(&store, Split::Train);
    assert!(seqs.iter().flatten().all(|&t| t != special.cls));
    let seps = seqs.iter().flatten().filter(|&&t| t == special.sep).count();
    assert_eq!(seps as u64, manifest.splits.train.documents);
    assert_eq!(manifest.splits.train.documents, 100);
}

#[test]
fn folders_are_read_recursively_and_short_documents_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    std::fs::create_dir_all(corpus.join("more")).unwrap();
    synthetic_corpus(&corpus.join("a.txt"), 40);
    synthetic_corpus(&corpus.join("more/b.txt"), 40);
    std::fs::write(corpus.join("short.txt"), "too short\n\nalso short\n").unwrap();
    let out = dir.path().join("prepared");
    let manifest = prepare(&small_options(vec![corpus], out)).unwrap();
    let files: Vec<&str> = manifest.inputs.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(files.len(), 3);
    assert!(files[0].ends_with("a.txt") && files[1].ends_with("more/b.txt"));
    let read = &manifest.stages[0];
    assert_eq!((read.docs_in, read.docs_out), (82, 82));
    let min_length = &manifest.stages[2];
    assert_eq!(min_length.name, "min-length");
    assert_eq!(min_length.docs_out, 80);
    assert_eq!(min_length.stats["dropped"], 2);
}

/// Runs `prepare` expecting an error, and checks that nothing but the
/// inputs is left in `dir`.
fn expect_clean_failure(dir: &Path, opts: &PrepareOptions, before: &[String]) -> DataError {
    let err = prepare(opts).expect_err("prepare should fail");
    assert_eq!(entries(dir), before, "output left behind after: {err}");
    err
}

#[test]
fn a_missing_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-file.txt");
    let opts = options(vec![missing], dir.path().join("prepared"));
    let err = expect_clean_failure(dir.path(), &opts, &[]);
    assert!(matches!(err, DataError::InputNotFound { .. }), "{err}");
    assert!(err.to_string().contains("no-such-file.txt"), "{err}");
}

#[test]
fn an_empty_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let opts = options(vec![empty], dir.path().join("prepared"));
    let err = expect_clean_failure(dir.path(), &opts, &["empty.txt".into()]);
    assert!(matches!(err, DataError::NoDocuments { .. }), "{err}");
    assert!(err.to_string().contains("empty.txt"), "{err}");
}

#[test]
fn non_utf8_input_names_the_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.txt");
    synthetic_corpus(&good, 20);
    let bad = dir.path().join("latin1.txt");
    std::fs::write(&bad, b"a caf\xe9 in the town square, long enough to keep").unwrap();
    let opts = options(vec![good, bad], dir.path().join("prepared"));
    let before = ["good.txt".to_string(), "latin1.txt".to_string()];
    let err = expect_clean_failure(dir.path(), &opts, &before);
    assert!(matches!(err, DataError::NotUtf8 { offset: 5, .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("latin1.txt") && message.contains("offset 5"),
        "{message}"
    );
}

#[test]
fn an_existing_output_needs_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    synthetic_corpus(&input, 50);
    let out = dir.path().join("prepared");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "precious").unwrap();
    let opts = small_options(vec![input], out.clone());
    let before = ["corpus.txt".to_string(), "prepared".to_string()];
    let err = expect_clean_failure(dir.path(), &opts, &before);
    assert!(matches!(err, DataError::OutputExists { .. }), "{err}");
    assert!(err.to_string().contains("--overwrite"), "{err}");
    assert_eq!(entries(&out), ["keep.txt"]);

    prepare(&PrepareOptions {
        overwrite: true,
        ..opts
    })
    .unwrap();
    let written = entries(&out);
    assert!(!written.contains(&"keep.txt".to_string()), "{written:?}");
    assert!(
        written.contains(&"manifest.json".to_string()),
        "{written:?}"
    );
    assert_eq!(entries(dir.path()), before, "no staging folder left");
}

#[test]
fn bad_tokenizer_files_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    synthetic_corpus(&input, 50);
    let scratch = tempfile::tempdir().unwrap();
    let trained = scratch.path().join("trained");
    prepare(&small_options(vec![input.clone()], trained.clone())).unwrap();
    let text = std::fs::read_to_string(trained.join("tokenizer.json")).unwrap();

    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{ not a tokenizer").unwrap();
    let no_mask = dir.path().join("no-mask.json");
    std::fs::write(&no_mask, text.replace("[MASK]", "[MSK]")).unwrap();
    let before = entries(dir.path());

    for (tokenizer, expected) in [(broken, "broken.json"), (no_mask, "[MASK]")] {
        let opts = PrepareOptions {
            tokenizer: Some(tokenizer),
            ..small_options(vec![input.clone()], dir.path().join("prepared"))
        };
        let err = expect_clean_failure(dir.path(), &opts, &before);
        assert!(err.to_string().contains(expected), "{err}");
    }
}
