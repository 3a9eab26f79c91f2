//! Any text parsed as a saved request: an error, or a request whose parts
//! are trimmed and none of them empty when present.

#![no_main]

use abridge::input::SavedRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(request) = SavedRequest::parse(text) else {
        return;
    };
    assert_eq!(request.question, request.question.trim());
    assert_eq!(request.article, request.article.trim());
    for part in [&request.answer, &request.model, &request.system]
        .into_iter()
        .flatten()
    {
        assert!(!part.trim().is_empty());
    }
});
