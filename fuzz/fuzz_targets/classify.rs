//! Fuzzes `classify` on arbitrary input: it must never panic, and every range it returns
//! must be a slice of the frame holding one JSON value.
#![no_main]

use cdpmux::cdp::protocol::{classify, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The socket layer hands over text frames only (valid UTF-8); a lossy decode still
    // lets byte-level mutations reach the parser.
    let text = String::from_utf8_lossy(data);
    let Ok(frame) = classify(&text) else { return };
    let span = match frame {
        Frame::Reply { outcome: Ok(r), .. } => r,
        Frame::Reply {
            outcome: Err(e), ..
        } => {
            let _ = (e.code, e.message.len());
            return;
        }
        Frame::Event { params, .. } => params,
    };
    if span.is_empty() {
        return;
    }
    let slice = text.get(span).expect("a span is a slice of the frame");
    // Syntactically valid JSON; a string in it may still hold a lone surrogate escape,
    // which only the caller's typed decode rejects (with an error, not a panic).
    serde_json::from_str::<&serde_json::value::RawValue>(slice).expect("a span holds JSON");
});
