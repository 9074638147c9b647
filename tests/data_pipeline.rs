//! End-to-end tests of the pipeline's stages on inputs made here: planted
//! duplicates and near duplicates, junk for the compression filter, the
//! unigram sort, JSON Lines and compressed inputs, mixing weights, the
//! byte-level BPE tokenizer, restarting after a failure, and bad input.
//! One test reads the development corpus in ../shared/data and is ignored unless asked for.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use cram::data::{
    prepare, prepare_timed, DataError, InputSpec, Manifest, PrepareOptions, Split, Stage,
    TokenStore, TokenizerKind,
};

/// Documents of made-up words over syllables: a skewed (Zipf-like) choice
/// so that BPE finds merges. `seed` varies the documents, `syllables` the
/// alphabet they are made of.
fn documents(seed: u64, count: usize, words: usize, syllables: &[&str]) -> Vec<String> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = |n: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % n
    };
    (0..count)
        .map(|_| {
            let mut doc = String::new();
            for w in 0..words {
                let length = 1 + next(3).min(next(3));
                for _ in 0..length {
                    doc.push_str(syllables[next(syllables.len()).min(next(syllables.len()))]);
                }
                doc.push(if w % 13 == 12 { '.' } else { ' ' });
                if w % 13 == 12 {
                    doc.push(' ');
                }
            }
            doc.trim().to_string()
        })
        .collect()
}

const SYLLABLES: [&str; 12] = [
    "ka", "lo", "mi", "ter", "san", "do", "ri", "ven", "tu", "pe", "ro", "na",
];

fn write_text(path: &Path, docs: &[String]) {
    std::fs::write(path, docs.join("\n\n")).unwrap();
}

fn jsonl(docs: &[String]) -> String {
    docs.iter()
        .enumerate()
        .map(|(i, d)| serde_json::json!({"id": i, "text": d}).to_string() + "\n")
        .collect()
}

/// Small-vocabulary settings for a test corpus.
fn options(inputs: Vec<InputSpec>, out: PathBuf) -> PrepareOptions {
    PrepareOptions {
        vocab_size: 300,
        seq_len: 32,
        val_fraction: 0.1,
        shard_sequences: 200,
        seed: 3,
        max_tokens_per_char: None,
        unigram_sort: false,
        ..PrepareOptions::new(inputs, out)
    }
}

fn stage<'a>(manifest: &'a Manifest, name: &str) -> &'a Stage {
    manifest
        .stages
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no stage {name}"))
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

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn planted_duplicates_and_near_duplicates_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut docs = documents(1, 120, 300, &SYLLABLES);
    let exact: Vec<String> = docs[..5].to_vec();
    // Two words changed in 300: about 0.94 Jaccard over 5-word shingles.
    let near: Vec<String> = docs[10..17]
        .iter()
        .map(|d| {
            let mut words: Vec<&str> = d.split(' ').collect();
            words[100] = "changed";
            words[200] = "edited";
            words.join(" ")
        })
        .collect();
    // Every other word replaced: far from any document.
    let distinct: String = docs[20]
        .split(' ')
        .enumerate()
        .map(|(i, w)| if i % 2 == 0 { "other" } else { w })
        .collect::<Vec<_>>()
        .join(" ");
    docs.extend(exact);
    docs.extend(near);
    docs.push(distinct);
    let input = dir.path().join("corpus.txt");
    write_text(&input, &docs);
    let manifest = prepare(&options(vec![input.into()], dir.path().join("out"))).unwrap();
    let exact = stage(&manifest, "dedup-exact");
    assert_eq!(
        (exact.docs_in, exact.stats["dropped"].as_u64()),
        (133, Some(5))
    );
    let near = stage(&manifest, "near-dup");
    assert_eq!(
        (near.docs_in, near.stats["dropped"].as_u64()),
        (128, Some(7))
    );
    let splits = &manifest.splits;
    assert_eq!(splits.train.documents + splits.val.documents, 121);
}

#[test]
fn junk_is_caught_by_the_compression_filter() {
    let dir = tempfile::tempdir().unwrap();
    let mut docs = documents(2, 150, 120, &SYLLABLES);
    // Uniformly random symbols: nothing for the tokenizer to merge.
    let symbols: Vec<char> = "qxzjwvk0123456789#!$%&*+=@^~".chars().collect();
    let mut state = 12345u64;
    for _ in 0..6 {
        let junk: String = (0..600)
            .map(|i| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                if i % 7 == 6 {
                    ' '
                } else {
                    symbols[(state >> 33) as usize % symbols.len()]
                }
            })
            .collect();
        docs.push(junk);
    }
    let input = dir.path().join("corpus.txt");
    write_text(&input, &docs);
    let opts = PrepareOptions {
        max_tokens_per_char: Some(0.5),
        ..options(vec![input.into()], dir.path().join("out"))
    };
    let manifest = prepare(&opts).unwrap();
    let filter = stage(&manifest, "compression-filter");
    assert_eq!(filter.stats["dropped"].as_u64(), Some(6), "{filter:?}");
    let kept = filter.stats["kept_tokens_per_char"].as_f64().unwrap();
    assert!(kept < 0.5, "{kept}");
}

/// The mean log2 probability of a sequence's ordinary tokens under the
/// train split's token counts (special tokens not counted), as the sort
/// defines it.
fn unigram_scores(store: &TokenStore) -> Vec<f64> {
    let special = store.special();
    let specials = [special.pad, special.cls, special.sep, special.mask];
    let mut counts = store.unigram_counts(Split::Train);
    for s in specials {
        counts[s as usize] = 0;
    }
    let total: u64 = counts.iter().sum::<u64>() + counts.len() as u64;
    let ordinary = |t: u32| !specials.contains(&t) && t != special.unk;
    sequences(store, Split::Train)
        .iter()
        .map(|seq| {
            let logs: Vec<f64> = seq
                .iter()
                .filter(|&&t| ordinary(t))
                .map(|&t| ((counts[t as usize] + 1) as f64 / total as f64).log2())
                .collect();
            logs.iter().sum::<f64>() / logs.len().max(1) as f64
        })
        .collect()
}

#[test]
fn unigram_sort_puts_common_text_first_and_keeps_every_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    write_text(&input, &documents(4, 200, 80, &SYLLABLES));
    let run = |name: &str, sort: bool| {
        let out = dir.path().join(name);
        let opts = PrepareOptions {
            unigram_sort: sort,
            ..options(vec![input.clone().into()], out.clone())
        };
        (prepare(&opts).unwrap(), TokenStore::open(&out).unwrap())
    };
    let (sorted_manifest, sorted) = run("sorted", true);
    let (plain_manifest, plain) = run("plain", false);
    assert_eq!(sorted_manifest.sorted_by.as_deref(), Some("unigram"));
    assert_eq!(plain_manifest.sorted_by, None);
    assert_eq!(stage(&sorted_manifest, "sort").stats["split"], "train");
    let scores = unigram_scores(&sorted);
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1] - 1e-4),
        "not in descending order"
    );
    assert!(scores[0] > scores[scores.len() - 1]);
    let mut a = sequences(&sorted, Split::Train);
    let mut b = sequences(&plain, Split::Train);
    assert_ne!(a, b, "the order changed");
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same sequences");
    assert_eq!(
        sequences(&sorted, Split::Val),
        sequences(&plain, Split::Val),
        "validation keeps its order"
    );
}

#[test]
fn json_lines_and_compressed_inputs_give_the_same_dataset_as_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let docs = documents(5, 150, 60, &SYLLABLES);
    let text = dir.path().join("corpus.txt");
    write_text(&text, &docs);
    let gz = dir.path().join("corpus.jsonl.gz");
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    encoder.write_all(jsonl(&docs).as_bytes()).unwrap();
    encoder.finish().unwrap();
    let zst = dir.path().join("corpus.ndjson.zst");
    std::fs::write(&zst, zstd::encode_all(jsonl(&docs).as_bytes(), 3).unwrap()).unwrap();
    let txt_zst = dir.path().join("corpus.txt.zst");
    let plain_text = docs.join("\n\n");
    std::fs::write(
        &txt_zst,
        zstd::encode_all(plain_text.as_bytes(), 3).unwrap(),
    )
    .unwrap();
    let mut reference = None;
    for (i, input) in [text, gz, zst, txt_zst].into_iter().enumerate() {
        let out = dir.path().join(format!("out{i}"));
        let manifest = prepare(&options(vec![input.into()], out)).unwrap();
        assert_eq!(stage(&manifest, "read").docs_out, 150);
        let splits = serde_json::to_value(&manifest.splits).unwrap();
        match &reference {
            None => reference = Some(splits),
            Some(r) => assert_eq!(&splits, r, "input {i}"),
        }
    }
}

/// Syllables of letters `SYLLABLES` never uses, so that each input's
/// tokens can be told apart.
const OTHER_SYLLABLES: [&str; 12] = [
    "by", "fy", "gy", "hy", "jy", "wy", "xy", "zy", "bw", "fw", "gw", "hw",
];

#[test]
fn weighted_inputs_are_mixed_in_their_shares() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.txt");
    let second = dir.path().join("second.jsonl");
    write_text(&first, &documents(6, 400, 60, &SYLLABLES));
    std::fs::write(&second, jsonl(&documents(7, 400, 60, &OTHER_SYLLABLES))).unwrap();
    let inputs = vec![
        InputSpec::parse(&format!("{}:0.25", first.display())).unwrap(),
        InputSpec::parse(&format!("{}:0.75", second.display())).unwrap(),
    ];
    let out = dir.path().join("out");
    let manifest = prepare(&PrepareOptions {
        vocab_size: 400,
        ..options(inputs, out.clone())
    })
    .unwrap();
    let mix = stage(&manifest, "mix");
    let shares: Vec<f64> = mix.stats["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["share"].as_f64().unwrap())
        .collect();
    assert!((shares[0] - 0.25).abs() < 0.04, "{shares:?}");
    // Count the packed text by alphabet: the tokens of each input's words.
    let store = TokenStore::open(&out).unwrap();
    let tokenizer = store.tokenizer().unwrap();
    let first_letters: HashSet<char> = SYLLABLES.iter().flat_map(|s| s.chars()).collect();
    let second_letters: HashSet<char> = OTHER_SYLLABLES.iter().flat_map(|s| s.chars()).collect();
    let (mut a, mut b) = (0usize, 0usize);
    for split in Split::ALL {
        for seq in sequences(&store, split) {
            for id in seq {
                let token = tokenizer.id_to_token(id).unwrap_or_default();
                let letters: Vec<char> = token.chars().filter(|c| c.is_alphabetic()).collect();
                if letters.is_empty() {
                    continue;
                }
                if letters.iter().all(|c| first_letters.contains(c)) {
                    a += letters.len();
                } else if letters.iter().all(|c| second_letters.contains(c)) {
                    b += letters.len();
                }
            }
        }
    }
    let share = a as f64 / (a + b) as f64;
    assert!(
        (share - 0.25).abs() < 0.05,
        "first input's share of letters: {share}"
    );
}

#[test]
fn a_byte_level_bpe_dataset_decodes_back_to_its_text_with_hugging_face() {
    let dir = tempfile::tempdir().unwrap();
    let mut docs = documents(8, 120, 50, &SYLLABLES);
    docs[0] = format!("Cased Text, ünïcode — and symbols #1! {}", docs[0]);
    let input = dir.path().join("corpus.jsonl");
    std::fs::write(&input, jsonl(&docs)).unwrap();
    let out = dir.path().join("out");
    let manifest = prepare(&PrepareOptions {
        tokenizer_kind: TokenizerKind::Bpe,
        vocab_size: 400,
        cls_first: false,
        val_fraction: 0.0,
        ..options(vec![input.into()], out.clone())
    })
    .unwrap();
    assert_eq!(manifest.tokenizer.kind, "bpe");
    assert!(!manifest.tokenizer.lowercase);
    let hf = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    let store = TokenStore::open(&out).unwrap();
    let special = store.special();
    let stream: Vec<u32> = sequences(&store, Split::Train).concat();
    let decoded: Vec<String> = stream
        .split(|&t| t == special.sep)
        .filter(|d| !d.is_empty() && d.iter().all(|&t| t != special.pad))
        .map(|ids| hf.decode(ids, false).unwrap())
        .collect();
    let originals: HashSet<&String> = docs.iter().collect();
    assert!(decoded.len() > 100);
    for doc in &decoded {
        assert!(
            originals.contains(doc),
            "decoded text is not a document: {doc}"
        );
    }
    assert!(
        decoded.contains(&docs[0]),
        "the cased, accented document is intact"
    );
    assert_eq!(stage(&manifest, "pack").stats["unknown_tokens"], 0);
}

#[test]
fn a_failed_run_keeps_its_finished_passes_and_the_rerun_reuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    write_text(&input, &documents(9, 100, 60, &SYLLABLES));
    let out = dir.path().join("out");
    // A threshold nothing passes: clean and plan finish, encode fails.
    let failing = PrepareOptions {
        max_tokens_per_char: Some(0.001),
        ..options(vec![input.clone().into()], out.clone())
    };
    let err = prepare(&failing).unwrap_err();
    assert!(matches!(err, DataError::AllFiltered { .. }), "{err}");
    assert!(err.to_string().contains("max_tokens_per_char"), "{err}");
    assert!(!out.exists(), "nothing under the output name");
    assert_eq!(entries(dir.path()), ["corpus.txt", "out.work"]);

    let fixed = PrepareOptions {
        max_tokens_per_char: None,
        ..failing
    };
    let resumed = prepare_timed(&fixed).unwrap();
    let reused: Vec<&str> = resumed
        .timings
        .iter()
        .filter(|t| t.reused)
        .map(|t| t.stage)
        .collect();
    assert_eq!(reused, ["clean", "mix"]);
    assert_eq!(
        entries(dir.path()),
        ["corpus.txt", "out"],
        "the work folder is gone"
    );
    let fresh_out = dir.path().join("fresh");
    let fresh = prepare(&PrepareOptions {
        out: fresh_out.clone(),
        ..fixed
    })
    .unwrap();
    assert_eq!(
        fresh.splits, resumed.manifest.splits,
        "the same dataset as a fresh run"
    );
    for name in entries(&out) {
        let same = std::fs::read(out.join(&name)).unwrap()
            == std::fs::read(fresh_out.join(&name)).unwrap();
        assert!(same, "{name} differs");
    }
}

#[test]
fn a_changed_tokenizer_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    write_text(&input, &documents(10, 60, 40, &SYLLABLES));
    let out = dir.path().join("out");
    prepare(&options(vec![input.into()], out.clone())).unwrap();
    let store = TokenStore::open(&out).unwrap();
    let continuations = store.word_continuations().unwrap();
    assert_eq!(continuations.len(), store.vocab_size());
    let tokenizer = store.tokenizer().unwrap();
    for (token, id) in tokenizer.get_vocab(true) {
        assert_eq!(
            continuations[id as usize],
            token.starts_with("##"),
            "{token}"
        );
    }
    let path = out.join("tokenizer.json");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    let err = TokenStore::open(&out).err().unwrap();
    assert!(matches!(err, DataError::TokenizerMismatch { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

#[test]
fn bad_inputs_fail_cleanly_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let docs = documents(11, 30, 40, &SYLLABLES);
    let wrong_field = dir.path().join("wrong.jsonl");
    std::fs::write(
        &wrong_field,
        docs.iter()
            .map(|d| serde_json::json!({"body": d}).to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let corrupt = dir.path().join("corrupt.jsonl.zst");
    let mut bytes = zstd::encode_all(jsonl(&docs).as_bytes(), 3).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&corrupt, bytes).unwrap();
    let good = dir.path().join("good.txt");
    write_text(&good, &docs);
    let before = entries(dir.path());
    let cases: Vec<(Vec<InputSpec>, &str)> = vec![
        (vec![wrong_field.clone().into()], "\"body\""),
        (vec![corrupt.into()], "corrupt.jsonl.zst"),
        (
            vec![
                good.clone().into(),
                InputSpec::parse(&format!("{}:0.5", wrong_field.display())).unwrap(),
            ],
            "weight",
        ),
    ];
    for (inputs, needle) in cases {
        let err = prepare(&options(inputs, dir.path().join("out"))).unwrap_err();
        assert!(err.to_string().contains(needle), "{needle}: {err}");
        assert_eq!(entries(dir.path()), before, "left behind after: {err}");
    }
    let opts = PrepareOptions {
        text_field: "body".into(),
        ..options(vec![wrong_field.into()], dir.path().join("out"))
    };
    prepare(&opts).unwrap();
}

/// Its counts are those of the development corpus, which a fresh clone does
/// not have: ignored in `cargo test`, run with `--ignored` beside ../shared.
#[test]
#[ignore = "needs ../shared/data/english (the development data)"]
fn english_json_lines_through_every_stage() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/english/english-mixed.jsonl.zst");
    assert!(
        path.is_file(),
        "{} not found (the shared English data)",
        path.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let prepared = prepare_timed(&PrepareOptions {
        vocab_size: 4096,
        seq_len: 128,
        tokenizer_sample_bytes: 4 << 20,
        max_tokens_per_char: Some(0.4),
        unigram_sort: true,
        shard_sequences: 20_000,
        ..PrepareOptions::new(vec![path.into()], out.clone())
    })
    .unwrap();
    let manifest = &prepared.manifest;
    let names: Vec<&str> = manifest.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
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
            "pack",
            "sort"
        ]
    );
    assert_eq!(stage(manifest, "read").docs_out, 3805);
    let sample = stage(manifest, "tokenizer").stats["sample_bytes"]
        .as_u64()
        .unwrap();
    assert!(
        (3 << 20..6 << 20).contains(&sample),
        "sample of {sample} bytes"
    );
    let kept = stage(manifest, "compression-filter").stats["kept_tokens_per_char"]
        .as_f64()
        .unwrap();
    assert!(
        (0.15..0.35).contains(&kept),
        "English at {kept} tokens per character"
    );
    let store = TokenStore::open(&out).unwrap();
    store.verify().unwrap();
    assert!(store.len(Split::Train) > 30_000);
    assert!(prepared.timings.iter().all(|t| !t.reused));
}
