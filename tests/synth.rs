//! The synthetic Mistral-7B-Instruct-v0.2 Q4_K_M: a reduced-layer file written
//! with the real Mistral vocabulary has the spec's tensors, loads and runs, and
//! tokenizes like llama.cpp did on a synthetic file with the same vocabulary
//! (`tests/fixtures/golden/tokenize.mistral-7b-instruct-v0.2-synthetic-q4_k_m.json`).

use abridge::gguf::{GgufFile, GgufWriter, Value};
use abridge::synth::{self, MISTRAL_7B_INSTRUCT_V02, SynthOptions, Vocabulary};
use abridge::{ContextWindow, Model, Tokenizer};
use serde_json::Value as Json;

fn mistral_tokenizer() -> std::path::PathBuf {
    abridge_tests::model(synth::MISTRAL_TOKENIZER_FILE)
}

fn golden() -> Json {
    let path =
        abridge_tests::fixture("golden/tokenize.mistral-7b-instruct-v0.2-synthetic-q4_k_m.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn paragraph() -> String {
    std::fs::read_to_string(abridge_tests::fixture("golden/paragraph.txt")).unwrap()
}

fn check_tokenizer_parity(tokenizer: &Tokenizer) {
    let g = golden();
    let text = g["text"].as_str().unwrap();
    assert_eq!(paragraph().trim_end_matches('\n'), text);
    assert_eq!(tokenizer.vocab_size(), 32000);
    assert_eq!(tokenizer.encode(text).unwrap(), ids(&g["ids_no_special"]));
    assert_eq!(
        tokenizer.encode_prompt(text).unwrap(),
        ids(&g["ids_add_special"])
    );
    assert_eq!(tokenizer.bos(), Some(1));
    assert_eq!(tokenizer.eos(), Some(2));
    assert!(tokenizer.adds_bos());
    // The seed article: 4,359 tokens in llama.cpp, as the seed's notes say.
    let seed =
        abridge::input::SavedRequest::from_file(&abridge_tests::fixture("seed-request.json"))
            .unwrap();
    let want: Json = serde_json::from_str(
        &std::fs::read_to_string(abridge_tests::fixture(
            "golden/tokenize_seed.mistral-7b-instruct-v0.2-synthetic-q4_k_m.json",
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(tokenizer.encode(&seed.article).unwrap(), ids(&want["ids"]));
}

#[test]
fn real_vocabulary_tokenizes_like_llama_cpp() {
    let sp =
        abridge::tokenizer::sentencepiece::SentencePieceModel::open(mistral_tokenizer()).unwrap();
    assert_eq!(sp.pieces.len(), 32000);
    assert_eq!(
        sp.model_type,
        abridge::tokenizer::sentencepiece::ModelType::Bpe
    );
    assert!(sp.byte_fallback);
    let dir = tempfile::tempdir().unwrap();
    check_tokenizer_parity(&abridge_tests::mistral_tokenizer(dir.path()));
}

/// With TheBloke's `general.name` and without the description, the full
/// 32-layer file would have exactly the size of TheBloke's
/// `mistral-7b-instruct-v0.2.Q4_K_M.gguf` (models.toml): same metadata, vocabulary,
/// tensor table, quantization types and alignment.
#[test]
fn full_file_would_be_byte_for_byte_the_size_of_thebloke_file() {
    let sp =
        abridge::tokenizer::sentencepiece::SentencePieceModel::open(mistral_tokenizer()).unwrap();
    let mut meta = synth::mistral_7b_metadata(32, &Vocabulary::from_sentencepiece(&sp));
    meta.retain(|(k, _)| k != "general.description");
    for (k, v) in &mut meta {
        if k == "general.name" {
            *v = Value::String("mistralai_mistral-7b-instruct-v0.2".into());
        }
    }
    assert_eq!(meta.len(), 24);
    let tensors = synth::q4_k_m_tensors(&MISTRAL_7B_INSTRUCT_V02, 32);
    let writer = GgufWriter::new(std::io::sink(), &meta, tensors).unwrap();
    let catalogue = abridge::registry::Catalogue::shipped();
    let thebloke = catalogue.find("mistral:7b-instruct-v0.2-q4_K_M").unwrap();
    assert_eq!(writer.total_size(), thebloke.size);
}

#[test]
fn placeholder_vocabulary_still_tokenizes() {
    let dir = tempfile::tempdir().unwrap();
    let path = abridge_tests::vocab_only_gguf(dir.path(), &Vocabulary::placeholder(32000));
    let gguf = GgufFile::open(&path).unwrap();
    let tokenizer = Tokenizer::from_gguf(&gguf).unwrap();
    let text = "Honeybees dance — ✓ 750 metres.";
    let ids = tokenizer.encode_prompt(text).unwrap();
    assert_eq!(ids[0], 1);
    assert!(ids.iter().all(|&id| id < 32000));
    assert_eq!(tokenizer.decode(&ids).unwrap(), text);
}

/// The whole path on a two-layer file: write, read back against the spec, load,
/// run, tokenize.
#[test]
fn two_layer_checkpoint_matches_the_spec_loads_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mistral-synthetic-2l.gguf");
    let options = SynthOptions {
        tokenizer: Some(mistral_tokenizer()),
        seed: 7,
        layers: Some(2),
    };
    let mut calls = 0u64;
    let mut last = (0, 0);
    let written = synth::write_mistral_7b(&path, &options, |done, total| {
        assert!(done >= last.0 && done <= total);
        last = (done, total);
        calls += 1;
    })
    .unwrap();
    assert!(calls > 20, "progress reported {calls} times");
    assert_eq!(last.0, last.1);
    assert_eq!(written.bytes, std::fs::metadata(&path).unwrap().len());
    assert!(written.real_vocabulary);
    // Only the finished file is left: the temporary name is gone.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        [std::ffi::OsString::from("mistral-synthetic-2l.gguf")]
    );

    // Every tensor as the spec says: names, shapes, quantization types.
    let gguf = GgufFile::open(&path).unwrap();
    assert_eq!(gguf.version(), 3);
    let spec = synth::q4_k_m_tensors(&MISTRAL_7B_INSTRUCT_V02, 2);
    assert_eq!(gguf.tensors().len(), spec.len());
    for (info, want) in gguf.tensors().iter().zip(&spec) {
        assert_eq!(info.name, want.name);
        assert_eq!(info.shape, want.shape, "{}", want.name);
        assert_eq!(
            info.kind.ggml_dtype(),
            Some(want.dtype),
            "{}: {}",
            want.name,
            info.kind.name()
        );
    }
    let kind = |name: &str| gguf.tensor_info(name).unwrap().kind.name();
    assert_eq!(kind("token_embd.weight"), "Q4_K");
    assert_eq!(kind("output.weight"), "Q6_K");
    assert_eq!(kind("output_norm.weight"), "F32");
    assert_eq!(
        gguf.tensor_info("blk.1.ffn_down.weight").unwrap().shape,
        [4096, 14336]
    );
    assert_eq!(
        gguf.tensor_info("blk.0.attn_k.weight").unwrap().shape,
        [1024, 4096]
    );
    // llama.cpp's rule for a 2-layer model: layer 1 (>= 7*2/8) gets Q6_K.
    assert_eq!(kind("blk.0.attn_v.weight"), "Q4_K");
    assert_eq!(kind("blk.1.attn_v.weight"), "Q6_K");
    assert_eq!(kind("blk.1.ffn_down.weight"), "Q6_K");

    // Metadata.
    let s = |k: &str| gguf.get_str(k).unwrap().to_owned();
    let u = |k: &str| gguf.get_u64(k).unwrap();
    assert_eq!(s("general.architecture"), "llama");
    assert!(s("general.name").contains("synthetic"));
    assert_eq!(u("general.file_type"), 15);
    assert_eq!(u("llama.block_count"), 2);
    assert_eq!(u("llama.embedding_length"), 4096);
    assert_eq!(u("llama.feed_forward_length"), 14336);
    assert_eq!(u("llama.attention.head_count"), 32);
    assert_eq!(u("llama.attention.head_count_kv"), 8);
    assert_eq!(u("llama.context_length"), 32768);
    assert_eq!(u("llama.rope.dimension_count"), 128);
    assert_eq!(gguf.get_f64("llama.rope.freq_base").unwrap(), 1e6);
    assert_eq!(
        gguf.get("llama.attention.layer_norm_rms_epsilon"),
        Some(&Value::F32(1e-5))
    );
    assert_eq!(s("tokenizer.ggml.model"), "llama");
    assert_eq!(u("tokenizer.ggml.bos_token_id"), 1);
    assert_eq!(u("tokenizer.ggml.eos_token_id"), 2);
    assert_eq!(u("tokenizer.ggml.unknown_token_id"), 0);
    assert_eq!(
        gguf.get("tokenizer.ggml.add_bos_token"),
        Some(&Value::Bool(true))
    );
    assert_eq!(
        gguf.get("tokenizer.ggml.add_eos_token"),
        Some(&Value::Bool(false))
    );
    assert!(
        s("tokenizer.chat_template").starts_with("{{ bos_token }}{% for message in messages %}")
    );
    let types = gguf
        .get("tokenizer.ggml.token_type")
        .unwrap()
        .as_array()
        .unwrap();
    assert_eq!(types[0], Value::I32(2));
    assert_eq!(types[1], Value::I32(3));
    assert_eq!(types[3], Value::I32(6));
    assert_eq!(types[1000], Value::I32(1));
    drop(gguf);

    // It loads, runs and tokenizes like llama.cpp.
    let model = Model::load_with(&path, abridge_tests::options(2)).unwrap();
    check_tokenizer_parity(model.tokenizer());
    let prompt = model
        .template()
        .render_turn(None, "Summarize: bees dance.")
        .unwrap();
    assert!(
        prompt.text().starts_with("<s>[INST] Summarize"),
        "{prompt:?}"
    );
    let ids = model.tokenizer().encode_rendered(&prompt).unwrap();
    let mut cache = model.new_cache(ContextWindow::new(64).unwrap()).unwrap();
    let logits = model.forward(&ids, &mut cache).unwrap();
    let logits: Vec<f32> = logits.to_vec1().unwrap();
    assert_eq!(logits.len(), 32000);
    assert!(logits.iter().all(|x| x.is_finite()));
    let spread = logits.iter().cloned().fold(f32::MIN, f32::max)
        - logits.iter().cloned().fold(f32::MAX, f32::min);
    assert!(spread > 0.1, "logits are nearly constant: spread {spread}");
    // One decode step after the prompt.
    let next = model.forward(&[28705], &mut cache).unwrap();
    assert!(next.to_vec1::<f32>().unwrap().iter().all(|x| x.is_finite()));

    // The logits after a 64-token prompt agree with llama.cpp's on the same
    // file (seed 7 writes the same bytes every time; fixture from
    // scripts/reference/synth_logits.py).
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(abridge_tests::fixture(
            "golden/synth_logits.mistral-7b-synthetic-2l-seed7.json",
        ))
        .unwrap(),
    )
    .unwrap();
    let prompt: Vec<u32> = reference["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(prompt.len(), 64);
    let mut cache = model.new_cache(ContextWindow::new(64).unwrap()).unwrap();
    let ours: Vec<f32> = model
        .forward(&prompt, &mut cache)
        .unwrap()
        .to_vec1()
        .unwrap();
    let (mut worst, mut total) = (0f32, 0f32);
    let compared = reference["logits"].as_object().unwrap();
    for (id, want) in compared {
        let id: usize = id.parse().unwrap();
        let diff = (ours[id] - want.as_f64().unwrap() as f32).abs();
        worst = worst.max(diff);
        total += diff;
    }
    let mean = total / compared.len() as f32;
    // Both engines quantize activations to 8 bits before every Q4_K/Q6_K
    // matmul; a different summation order can move a value across a rounding
    // step. Measured: at most 0.11, 0.03 on average, where the logits' spread
    // (std) is 1.28. A wrong layout, norm or rope moves them by whole units.
    assert!(
        worst < 0.25 && mean < 0.06,
        "logits differ from llama.cpp's by up to {worst}, {mean} on average"
    );
    let top = |l: &dyn Fn(usize) -> f32| (0..32000).max_by(|&a, &b| l(a).total_cmp(&l(b))).unwrap();
    let theirs: std::collections::HashMap<usize, f32> = reference["logits"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.parse().unwrap(), v.as_f64().unwrap() as f32))
        .collect();
    let their_top = top(&|i| theirs.get(&i).copied().unwrap_or(f32::MIN));
    assert_eq!(top(&|i| ours[i]), their_top, "a different next token");
    eprintln!("synthetic 7B (2 layers): logits within {worst} of llama.cpp's ({mean} on average)");
}
