//! Fuzzes `encode_call` then `classify`: the input is split into an id, a session id, a
//! method and a params string. The call frame must be JSON carrying exactly those fields
//! and must never classify as a reply or event; the reply a browser would build from it
//! must classify back to the same id, session id and result (compared value by value).
#![no_main]

use cdpmux::cdp::protocol::{classify, encode_call, Frame};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let id = u64::from_le_bytes(data[..8].try_into().unwrap());
    let with_session = data[8] & 1 == 1;
    let rest = String::from_utf8_lossy(&data[9..]);
    let mut parts = rest.splitn(3, '\u{0}');
    let (sid, method, params) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let sid = with_session.then_some(sid);
    // Params: the tail as JSON when it parses to an object, else as a string member.
    let params = match serde_json::from_str::<Value>(params) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({ "text": params }),
    };
    let call = encode_call(id, sid, method, &params).expect("a Value always encodes");
    let parsed: Value = serde_json::from_str(&call).expect("a call frame is JSON");
    assert_eq!(parsed["id"], json!(id));
    assert_eq!(parsed["method"], json!(method));
    assert_eq!(parsed.get("sessionId"), sid.map(|s| json!(s)).as_ref());
    assert_eq!(parsed.get("params"), Some(&params), "the call carries the params as given");
    assert!(
        classify(&call).is_err(),
        "a call is neither a reply nor an event"
    );

    let mut reply = json!({ "id": id, "result": params });
    if let Some(s) = sid {
        reply["sessionId"] = json!(s);
    }
    let text = reply.to_string();
    match classify(&text).expect("a reply classifies") {
        Frame::Reply {
            id: got,
            session_id,
            outcome,
        } => {
            assert_eq!(got, id);
            assert_eq!(session_id.as_deref(), sid);
            let range = outcome.expect("a result, not an error");
            let back: Value = serde_json::from_str(&text[range]).expect("the result is JSON");
            // The whole content, not only the member count: a range one byte off, or a
            // decoder that drops or reorders escapes, changes a value.
            assert_eq!(back, params, "the result reads back as sent");
        }
        other => panic!("a reply classified as {other:?}"),
    }
});
