//! The tokenizer files of an export: cram's `tokenizer.json` unchanged, plus
//! the `tokenizer_config.json` and `special_tokens_map.json` that
//! `AutoTokenizer.from_pretrained` reads to know the class and the special
//! tokens.
//!
//! The class is `PreTrainedTokenizerFast`, which runs tokenizer.json as it
//! is. `BertTokenizerFast` would rebuild the normalizer from its own
//! lowercase/accent options whenever they disagree with the file, and
//! `LlamaTokenizerFast` installs its own start-token rule in place of the
//! file's post-processor.

use super::mapping::{HfMapping, SpecialIds};
use super::ExportError;
use crate::data::SPECIAL_TOKENS;
use serde_json::{json, Map, Value};
use std::path::Path;
use tokenizers::Tokenizer;

/// The loaded tokenizer and the ids of the special tokens it has.
pub fn load(path: &Path) -> Result<(Tokenizer, SpecialIds), ExportError> {
    let tokenizer = crate::data::load_tokenizer(path).map_err(|e| ExportError::Tokenizer {
        path: path.to_path_buf(),
        cause: e.to_string(),
    })?;
    let [pad, unk, cls, sep, mask] = SPECIAL_TOKENS.map(|t| tokenizer.token_to_id(t));
    let ids = SpecialIds {
        pad,
        unk,
        cls,
        sep,
        mask,
    };
    Ok((tokenizer, ids))
}

/// The special tokens by transformers' role names, those the tokenizer has.
fn special_tokens_map(mapping: HfMapping, ids: &SpecialIds) -> Map<String, Value> {
    let [pad, unk, cls, sep, mask] = SPECIAL_TOKENS;
    let mut roles = vec![
        ("pad_token", pad, ids.pad),
        ("unk_token", unk, ids.unk),
        ("cls_token", cls, ids.cls),
        ("sep_token", sep, ids.sep),
        ("mask_token", mask, ids.mask),
    ];
    if mapping == HfMapping::Llama {
        // Documents end with [SEP] in cram's packed streams; [CLS] is the
        // start token config.json names too.
        roles.push(("bos_token", cls, ids.cls));
        roles.push(("eos_token", sep, ids.sep));
    }
    roles
        .into_iter()
        .filter(|(_, _, id)| id.is_some())
        .map(|(role, token, _)| (role.to_string(), json!(token)))
        .collect()
}

/// `tokenizer_config.json` and `special_tokens_map.json`, as JSON values.
pub fn config_files(mapping: HfMapping, ids: &SpecialIds, max_len: usize) -> (Value, Value) {
    let specials = special_tokens_map(mapping, ids);
    let mut config = specials.clone();
    config.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    config.insert("model_max_length".into(), json!(max_len));
    config.insert("clean_up_tokenization_spaces".into(), json!(false));
    // BERT reads token types (all zero here); the other two models take none.
    let inputs = match mapping {
        HfMapping::Bert => json!(["input_ids", "token_type_ids", "attention_mask"]),
        HfMapping::Llama | HfMapping::Crammed => json!(["input_ids", "attention_mask"]),
    };
    config.insert("model_input_names".into(), inputs);
    (Value::Object(config), Value::Object(specials))
}
