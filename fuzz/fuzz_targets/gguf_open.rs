//! Any bytes opened as a GGUF file: an error, or a file whose every
//! metadata value decodes and whose every tensor loads.

#![no_main]

use abridge::Device;
use abridge::gguf::GgufFile;
use libfuzzer_sys::fuzz_target;

/// Tensors larger than this are left unread: a mutated shape can describe
/// a large tensor in a small input only if the data is there, and copying
/// megabytes per run would only slow the search.
const MAX_TENSOR_BYTES: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data) else {
        return;
    };
    for key in file.keys() {
        assert!(
            file.get(key).is_some(),
            "`{key}` was accepted but does not decode"
        );
    }
    let _ = file.architecture();
    for info in file.tensors() {
        assert!(info.offset + info.size <= file.file_size());
        if info.size <= MAX_TENSOR_BYTES {
            let tensor = file
                .tensor(&info.name, Some(&info.shape), &Device::Cpu)
                .expect("a validated tensor loads");
            let _ = tensor.dequantize(&Device::Cpu);
        }
    }
});
