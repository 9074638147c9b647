//! Hugging Face export and import without Python: export → import gives the
//! same parameters bit for bit for every mapping, after a few training steps;
//! the exported tensors carry the names and shapes transformers saves; models
//! without a mapping, bad folders and occupied outputs fail with one clear
//! error and leave nothing behind. (`scripts/check_hf_parity.py` compares
//! the logits with transformers itself; it needs torch, which CI lacks.)

mod common;

use common::{assert_one_error, cram};

use cram::backend::cpu::Cpu;
use cram::backend::Device;
use cram::config::Config;
use cram::data::{prepare, PrepareOptions, TokenStore};
use cram::eval::infer::logits_at_every_position;
use cram::export::{
    export_hf, import_hf, read_safetensors, write_safetensors, ExportOptions, ImportOptions,
};
use cram::train::checkpoint::{self, load_params};
use cram::train::{fit_to_data, load_run, pretrain, RunOptions, RUN_TOKENIZER};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Small sizes; the structure stays the preset's.
const SMALL: &[&str] = &[
    "model.hidden=16",
    "model.layers=2",
    "model.heads=2",
    "model.ffn=32",
    "data.seq_len=16",
    "train.micro_batch=4",
    "train.batch_size=8",
    "train.budget=4 steps",
    "train.eval_every=2",
    "train.eval_batches=1",
];

/// Sentences over a few dozen words, enough for a 200-id WordPiece vocabulary.
fn corpus(path: &Path) {
    let words = [
        "the",
        "congress",
        "shall",
        "make",
        "no",
        "law",
        "nation",
        "people",
        "union",
        "state",
        "strong",
        "peace",
        "war",
        "trade",
        "treaty",
        "report",
        "debt",
        "reduced",
        "citizens",
        "senate",
        "house",
        "government",
        "public",
        "service",
        "year",
        "great",
        "country",
        "free",
    ];
    let mut text = String::new();
    for doc in 0..120 {
        for s in 0..6 {
            let sentence: Vec<&str> = (0..9)
                .map(|w| words[(doc * 7 + s * 5 + w * w * 3 + doc * w) % words.len()])
                .collect();
            text.push_str(&sentence.join(" "));
            text.push_str(". ");
        }
        text.push_str("\n\n");
    }
    std::fs::write(path, text).unwrap();
}

/// One prepared folder shared by the tests of this binary.
fn prepared() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, dir) = DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("speeches.txt");
        corpus(&input);
        let out = tmp.path().join("data");
        prepare(&PrepareOptions {
            vocab_size: 200,
            seq_len: 16,
            val_fraction: 0.1,
            shard_sequences: 1000,
            max_tokens_per_char: None,
            unigram_sort: false,
            near_dup_threshold: None,
            ..PrepareOptions::new(vec![input.into()], out.clone())
        })
        .unwrap();
        (tmp, out)
    });
    dir
}

/// Trains `preset` at small size for a few steps into `out`.
fn trained_run(preset: &str, extra: &[&str], out: &Path) {
    let store = TokenStore::open(prepared()).unwrap();
    let sets: Vec<String> = SMALL.iter().chain(extra).map(|s| s.to_string()).collect();
    let mut cfg = Config::resolve(preset, &sets).unwrap();
    fit_to_data(&mut cfg, &store).unwrap();
    let opts = RunOptions::new(out);
    pretrain(&Cpu::new(), &cfg, &store, &opts).unwrap();
}

fn export(run: &Path, out: &Path) -> cram::export::ExportSummary {
    export_hf(&ExportOptions {
        run: run.to_path_buf(),
        step: None,
        out: out.to_path_buf(),
        data: None,
        force: false,
    })
    .unwrap()
}

fn params_of(run: &Path) -> (Config, Vec<f32>) {
    let cfg = Config::load(&run.join("config.toml")).unwrap();
    let model = cram::model::Model::new(&cfg.model);
    let dir = checkpoint::find(run, None).unwrap();
    (cfg.clone(), load_params(&dir, &model).unwrap())
}

fn round_trip(preset: &str, extra: &[&str], class: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (run, hf, back) = (
        tmp.path().join("run"),
        tmp.path().join("hf"),
        tmp.path().join("back"),
    );
    trained_run(preset, extra, &run);
    let summary = export(&run, &hf);
    assert_eq!(summary.mapping.class(), class);
    let imported = import_hf(&ImportOptions {
        dir: hf.clone(),
        out: back.clone(),
        force: false,
    })
    .unwrap();
    assert!(imported.ignored.is_empty(), "{:?}", imported.ignored);
    assert!(imported.notes.is_empty(), "{:?}", imported.notes);

    let (cfg, before) = params_of(&run);
    let (cfg_back, after) = params_of(&back);
    assert_eq!(cfg.model, cfg_back.model, "{preset}: model config");
    assert_eq!(before.len(), after.len());
    let differing = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(
        differing, 0,
        "{preset}: parameters differ after export → import"
    );
    assert!(
        before.iter().filter(|v| **v != 0.0).count() > before.len() / 2,
        "{preset}: the trained parameters should be mostly non-zero"
    );
    assert_eq!(
        std::fs::read(run.join(RUN_TOKENIZER)).unwrap(),
        std::fs::read(back.join(RUN_TOKENIZER)).unwrap()
    );
}

#[test]
fn bert_base_round_trips_bit_for_bit() {
    round_trip("bert-base", &[], "BertForMaskedLM");
}

#[test]
fn bert_base_with_an_untied_decoder_round_trips_bit_for_bit() {
    round_trip(
        "bert-base",
        &["model.tie_embeddings=false"],
        "BertForMaskedLM",
    );
}

#[test]
fn gpt_small_round_trips_bit_for_bit() {
    round_trip("gpt-small", &[], "LlamaForCausalLM");
}

#[test]
fn gpt_small_with_an_untied_head_round_trips_bit_for_bit() {
    round_trip(
        "gpt-small",
        &["model.tie_embeddings=false"],
        "LlamaForCausalLM",
    );
}

#[test]
fn crammed_bert_round_trips_bit_for_bit() {
    round_trip("crammed-bert", &[], "CrammedForMaskedLM");
}

/// Names and shapes as transformers 5.24 saves `BertForMaskedLM` and
/// `LlamaForCausalLM` of one layer, hidden 16, ffn 32, 16 positions, plus
/// BERT's decoder bias, which transformers 4 reads under a second name.
#[test]
fn exported_tensors_have_transformers_names_and_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let one_layer = ["model.layers=1", "model.max_positions=16"];
    let vocab = TokenStore::open(prepared()).unwrap().vocab_size();
    let bert = [
        ("bert.embeddings.LayerNorm.bias", vec![16]),
        ("bert.embeddings.LayerNorm.weight", vec![16]),
        ("bert.embeddings.position_embeddings.weight", vec![16, 16]),
        ("bert.embeddings.token_type_embeddings.weight", vec![2, 16]),
        ("bert.embeddings.word_embeddings.weight", vec![vocab, 16]),
        (
            "bert.encoder.layer.0.attention.output.LayerNorm.bias",
            vec![16],
        ),
        (
            "bert.encoder.layer.0.attention.output.LayerNorm.weight",
            vec![16],
        ),
        ("bert.encoder.layer.0.attention.output.dense.bias", vec![16]),
        (
            "bert.encoder.layer.0.attention.output.dense.weight",
            vec![16, 16],
        ),
        ("bert.encoder.layer.0.attention.self.key.bias", vec![16]),
        (
            "bert.encoder.layer.0.attention.self.key.weight",
            vec![16, 16],
        ),
        ("bert.encoder.layer.0.attention.self.query.bias", vec![16]),
        (
            "bert.encoder.layer.0.attention.self.query.weight",
            vec![16, 16],
        ),
        ("bert.encoder.layer.0.attention.self.value.bias", vec![16]),
        (
            "bert.encoder.layer.0.attention.self.value.weight",
            vec![16, 16],
        ),
        ("bert.encoder.layer.0.intermediate.dense.bias", vec![32]),
        (
            "bert.encoder.layer.0.intermediate.dense.weight",
            vec![32, 16],
        ),
        ("bert.encoder.layer.0.output.LayerNorm.bias", vec![16]),
        ("bert.encoder.layer.0.output.LayerNorm.weight", vec![16]),
        ("bert.encoder.layer.0.output.dense.bias", vec![16]),
        ("bert.encoder.layer.0.output.dense.weight", vec![16, 32]),
        ("cls.predictions.bias", vec![vocab]),
        ("cls.predictions.decoder.bias", vec![vocab]),
        ("cls.predictions.transform.LayerNorm.bias", vec![16]),
        ("cls.predictions.transform.LayerNorm.weight", vec![16]),
        ("cls.predictions.transform.dense.bias", vec![16]),
        ("cls.predictions.transform.dense.weight", vec![16, 16]),
    ];
    // SwiGLU: cram's ffn 32 is value 16 | gate 16, Llama's intermediate_size 16.
    let llama = [
        ("model.embed_tokens.weight", vec![vocab, 16]),
        ("model.layers.0.input_layernorm.weight", vec![16]),
        ("model.layers.0.mlp.down_proj.weight", vec![16, 16]),
        ("model.layers.0.mlp.gate_proj.weight", vec![16, 16]),
        ("model.layers.0.mlp.up_proj.weight", vec![16, 16]),
        ("model.layers.0.post_attention_layernorm.weight", vec![16]),
        ("model.layers.0.self_attn.k_proj.weight", vec![16, 16]),
        ("model.layers.0.self_attn.o_proj.weight", vec![16, 16]),
        ("model.layers.0.self_attn.q_proj.weight", vec![16, 16]),
        ("model.layers.0.self_attn.v_proj.weight", vec![16, 16]),
        ("model.norm.weight", vec![16]),
    ];
    for (preset, expected) in [("bert-base", &bert[..]), ("gpt-small", &llama[..])] {
        let (run, hf) = (
            tmp.path().join(preset),
            tmp.path().join(format!("{preset}-hf")),
        );
        trained_run(preset, &one_layer, &run);
        export(&run, &hf);
        let tensors = read_safetensors(&hf.join("model.safetensors")).unwrap();
        let got: Vec<(&str, Vec<usize>)> = tensors
            .iter()
            .map(|(k, t)| (k.as_str(), t.shape.clone()))
            .collect();
        assert_eq!(got, expected, "{preset}");
    }
}

/// The q, k and v blocks and the value and gate halves land where
/// transformers reads them: rows of cram's packed matrices, in order.
#[test]
fn packed_projections_are_split_by_rows_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, hf) = (tmp.path().join("run"), tmp.path().join("hf"));
    trained_run("gpt-small", &[], &run);
    export(&run, &hf);
    let (cfg, params) = params_of(&run);
    let model = cram::model::Model::new(&cfg.model);
    let tensors = read_safetensors(&hf.join("model.safetensors")).unwrap();
    let cram = |name: &str| &params[model.layout.find(name).unwrap().span.range()];
    let (qkv, ffn_in) = (
        cram("layers.1.attn.qkv.weight"),
        cram("layers.1.ffn.in.weight"),
    );
    let (c, h) = (16 * 16, 16 * 16);
    let hf = |name: &str| tensors[name].data.as_slice();
    assert_eq!(hf("model.layers.1.self_attn.q_proj.weight"), &qkv[..c]);
    assert_eq!(hf("model.layers.1.self_attn.k_proj.weight"), &qkv[c..2 * c]);
    assert_eq!(hf("model.layers.1.self_attn.v_proj.weight"), &qkv[2 * c..]);
    assert_eq!(
        hf("model.layers.1.mlp.up_proj.weight"),
        &ffn_in[..h],
        "value rows"
    );
    assert_eq!(
        hf("model.layers.1.mlp.gate_proj.weight"),
        &ffn_in[h..],
        "gate rows"
    );
}

#[test]
fn export_writes_the_tokenizer_files_card_and_modeling_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, hf) = (tmp.path().join("tiny-run"), tmp.path().join("hf"));
    trained_run("tiny", &[], &run);
    export(&run, &hf);
    let mut names: Vec<String> = std::fs::read_dir(&hf)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "README.md",
            "config.json",
            "model.safetensors",
            "modeling_crammed.py",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["auto_map"]["AutoModelForMaskedLM"],
        "modeling_crammed.CrammedForMaskedLM"
    );
    let tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert_eq!(tok["tokenizer_class"], "PreTrainedTokenizerFast");
    assert_eq!(tok["mask_token"], "[MASK]");
    let card = std::fs::read_to_string(hf.join("README.md")).unwrap();
    assert!(
        card.contains("`tiny` with model.ffn = 32 (preset: 512)"),
        "{card}"
    );
    assert!(card.contains("held-out loss"), "{card}");
    assert!(card.contains("trust_remote_code=True"), "{card}");
    assert!(
        card.contains("budget | 4 steps; this checkpoint: step 4"),
        "{card}"
    );
}

#[test]
fn a_model_without_mapping_is_refused_with_the_list_of_mappings() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, out) = (tmp.path().join("run"), tmp.path().join("hf"));
    trained_run("gpt-small", &["model.norm=layernorm"], &run);
    let (code, _, err) = cram(&[
        "export",
        "hf",
        "--run",
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_one_error(
        code,
        &err,
        &[
            "config.toml",
            "bert-base → BertForMaskedLM",
            "gpt-small → LlamaForCausalLM needs model.norm = \"rmsnorm\" (this model has \"layernorm\")",
            "crammed-bert / tiny → CrammedForMaskedLM",
        ],
    );
    assert!(!out.exists());
}

#[test]
fn export_refuses_an_occupied_out_and_a_run_without_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, out) = (tmp.path().join("run"), tmp.path().join("hf"));
    trained_run("tiny", &[], &run);
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let args = [
        "export",
        "hf",
        "--run",
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let (code, _, err) = cram(&args);
    assert_one_error(code, &err, &["hf", "--overwrite"]);
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );

    std::fs::remove_file(run.join(RUN_TOKENIZER)).unwrap();
    let fresh = tmp.path().join("fresh");
    let (code, _, err) = cram(&[
        "export",
        "hf",
        "--run",
        run.to_str().unwrap(),
        "--out",
        fresh.to_str().unwrap(),
    ]);
    assert_one_error(code, &err, &["tokenizer.json", "--data"]);
    assert!(!fresh.exists());
    let (code, out_text, err) = cram(&[
        "export",
        "hf",
        "--run",
        run.to_str().unwrap(),
        "--out",
        fresh.to_str().unwrap(),
        "--data",
        prepared().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out_text.contains("CrammedForMaskedLM"), "{out_text}");
    assert!(fresh.join("tokenizer.json").is_file());
}

/// A change to a config.json.
type Edit = fn(&mut serde_json::Value);

/// Edits `config.json` of an export with `edit`, then imports it.
fn import_edited(
    tmp: &Path,
    hf: &Path,
    name: &str,
    edit: impl Fn(&mut serde_json::Value),
) -> (i32, String, PathBuf) {
    let copy = tmp.join(name);
    std::fs::create_dir(&copy).unwrap();
    for e in std::fs::read_dir(hf).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
    }
    let path = copy.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
    let out = tmp.join(format!("{name}-run"));
    let (code, _, err) = cram(&[
        "import",
        "hf",
        copy.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    (code, err, out)
}

#[test]
fn import_names_what_it_cannot_map() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, hf) = (tmp.path().join("run"), tmp.path().join("hf"));
    trained_run("gpt-small", &[], &run);
    export(&run, &hf);

    let cases: [(&str, Edit, &[&str]); 4] = [
        (
            "gpt2",
            |c| c["model_type"] = "gpt2".into(),
            &["\"gpt2\"", "\"bert\"", "\"llama\""],
        ),
        (
            "gqa",
            |c| c["num_key_value_heads"] = 1.into(),
            &["num_key_value_heads", "grouped-query"],
        ),
        (
            "gelu",
            |c| c["hidden_act"] = "gelu".into(),
            &["hidden_act", "silu"],
        ),
        (
            "yarn",
            |c| c["rope_parameters"]["rope_type"] = "yarn".into(),
            &["rope_type", "yarn"],
        ),
    ];
    for (name, edit, needles) in cases {
        let (code, err, out) = import_edited(tmp.path(), &hf, name, edit);
        let mut needles = needles.to_vec();
        needles.push("config.json");
        assert_one_error(code, &err, &needles);
        assert!(!out.exists(), "{name}");
    }

    // A tensor the model needs is missing from the weights.
    let weights = hf.join("model.safetensors");
    let mut tensors = read_safetensors(&weights).unwrap();
    tensors.remove("model.layers.1.mlp.gate_proj.weight");
    write_safetensors(&weights, &tensors).unwrap();
    let out = tmp.path().join("missing-run");
    let (code, _, err) = cram(&[
        "import",
        "hf",
        hf.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_one_error(
        code,
        &err,
        &[
            "model.safetensors",
            "model.layers.1.mlp.gate_proj.weight",
            "LlamaForCausalLM",
        ],
    );
    assert!(!out.exists());
}

#[test]
fn infer_prints_fp32_logits_for_every_position() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    trained_run("tiny", &[], &run);
    let ids = tmp.path().join("ids.json");
    std::fs::write(&ids, "[[2, 10, 11, 3], [2, 40, 3]]").unwrap();
    let (code, out, err) = cram(&[
        "infer",
        "--run",
        run.to_str().unwrap(),
        "--ids-file",
        ids.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let logits = json["logits"].as_array().unwrap();
    assert_eq!(logits.len(), 2);
    assert_eq!(logits[0].as_array().unwrap().len(), 4);
    assert_eq!(logits[1].as_array().unwrap().len(), 3);

    let be = Cpu::new();
    let loaded = load_run(&be, &run, None).unwrap();
    let expected = logits_at_every_position(&be, &loaded.model, &loaded.params, &[2, 40, 3]);
    let vocab = loaded.model.cfg.vocab_size;
    for (pos, row) in logits[1].as_array().unwrap().iter().enumerate() {
        let row: Vec<f32> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(
            row,
            expected[pos * vocab..(pos + 1) * vocab],
            "position {pos}"
        );
    }
    assert_eq!(be.download(&loaded.params).len(), loaded.model.num_params());

    std::fs::write(&ids, "[[2, 100000]]").unwrap();
    let (code, _, err) = cram(&[
        "infer",
        "--run",
        run.to_str().unwrap(),
        "--ids-file",
        ids.to_str().unwrap(),
    ]);
    assert_one_error(code, &err, &["ids.json", "100000", "vocabulary"]);
}
