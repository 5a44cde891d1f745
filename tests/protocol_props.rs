//! Property tests of the pure CDP layer (`cdpmux::cdp::protocol`): `classify` never
//! panics and never reads outside its frame, whatever the input; what `encode_call`
//! writes is exactly the call asked for; replies and events built by any JSON encoder
//! classify back to their id, method, session id and payload. The long, coverage-guided
//! run of the same targets is `scripts/fuzz.sh` (cargo-fuzz).

use cdpmux::cdp::protocol::{classify, encode_call, CdpError, Frame, FrameError};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Any JSON value, a few levels deep, with awkward strings and numbers.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Dyadic fractions: serde_json (without `float_roundtrip`) parses them back exactly.
        (any::<i16>(), 0..8u32).prop_map(|(m, e)| Value::from(f64::from(m) / f64::from(1u32 << e))),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON object: what CDP `params` and `result` always are. (A `"result": null` reply
/// is refused as malformed: serde reads `null` as an absent member.)
fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(any::<String>(), json_value(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn session_id() -> impl Strategy<Value = Option<String>> {
    prop::option::of(any::<String>())
}

/// Checks what every `Ok` from `classify` must satisfy: its ranges lie inside the frame,
/// on character boundaries, and hold one JSON value.
fn check_spans(text: &str, frame: &Frame<'_>) {
    let span = match frame {
        Frame::Reply {
            outcome: Ok(range), ..
        } => range.clone(),
        Frame::Reply {
            outcome: Err(_), ..
        } => return,
        Frame::Event { params, .. } if params.is_empty() => return,
        Frame::Event { params, .. } => params.clone(),
    };
    let slice = text.get(span.clone()).unwrap_or_else(|| {
        panic!(
            "span {span:?} is not a slice of a {} byte frame",
            text.len()
        )
    });
    // Syntax only: a lone surrogate escape (`"\\ud800"`) is valid JSON text that a typed
    // decode later rejects with an error.
    serde_json::from_str::<&serde_json::value::RawValue>(slice)
        .unwrap_or_else(|e| panic!("span {span:?} = {slice:?} is not JSON: {e}"));
}

#[test]
fn a_lone_surrogate_in_params_is_an_event_whose_decode_fails_cleanly() {
    // Found by the fuzzer (fuzz/corpus/classify): `classify` keeps params raw, so the bad
    // escape surfaces only when someone decodes them.
    let text = r#"{"method":"A","params":"\u00e9\ud41d\ude00"}"#;
    match classify(text).unwrap() {
        Frame::Event { method, params, .. } => {
            assert_eq!(method, "A");
            check_spans(text, &classify(text).unwrap());
            assert!(serde_json::from_str::<Value>(&text[params]).is_err());
        }
        other => panic!("classified as {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn classify_never_panics_on_any_string(text in any::<String>()) {
        if let Ok(frame) = classify(&text) {
            check_spans(&text, &frame);
        }
    }

    #[test]
    fn classify_never_panics_on_any_json(value in json_value()) {
        let text = value.to_string();
        match classify(&text) {
            Ok(frame) => check_spans(&text, &frame),
            Err(FrameError::Malformed(why)) => prop_assert!(!why.is_empty()),
            Err(FrameError::Unrecognised) => {
                // Only objects with neither an id nor a method (or non-objects rejected
                // as malformed above) land here.
                let obj = value.as_object();
                prop_assert!(obj.is_some_and(|o| o.get("id").is_none_or(Value::is_null)
                    && o.get("method").is_none_or(Value::is_null)), "{text}");
            }
        }
    }

    #[test]
    fn mutated_frames_never_panic(
        id in any::<u64>(),
        result in json_value(),
        cuts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        // Byte-level damage to a valid reply: overwritten bytes, then a lossy re-decode
        // (the socket layer only ever hands over valid UTF-8).
        let mut bytes = json!({"id": id, "result": result}).to_string().into_bytes();
        for (at, byte) in cuts {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(frame) = classify(&text) {
            check_spans(&text, &frame);
        }
    }

    #[test]
    fn every_proper_prefix_of_a_frame_is_rejected(
        id in any::<u64>(),
        sid in session_id(),
        result in json_object(),
    ) {
        let text = json!({"id": id, "sessionId": sid, "result": result}).to_string();
        for end in (0..text.len()).filter(|&i| text.is_char_boundary(i)) {
            prop_assert!(classify(&text[..end]).is_err(), "prefix {:?} accepted", &text[..end]);
        }
        prop_assert!(classify(&text).is_ok());
    }

    #[test]
    fn encode_call_writes_exactly_the_call(
        id in any::<u64>(),
        sid in session_id(),
        method in any::<String>(),
        params in json_value(),
    ) {
        let text = encode_call(id, sid.as_deref(), &method, &params).unwrap();
        let parsed: Value = serde_json::from_str(&text).unwrap();
        let obj = parsed.as_object().unwrap();
        prop_assert_eq!(obj.get("id"), Some(&json!(id)));
        prop_assert_eq!(obj.get("method"), Some(&json!(method)));
        let want_sid = sid.as_ref().map(|s| json!(s));
        prop_assert_eq!(obj.get("sessionId"), want_sid.as_ref());
        prop_assert_eq!(obj.get("params"), Some(&params));
        prop_assert_eq!(obj.len(), 3 + usize::from(sid.is_some()));
        // A call is never mistaken for a reply or an event: it has an id but no outcome.
        match classify(&text) {
            Err(FrameError::Malformed(why)) => prop_assert!(why.contains(&id.to_string()), "{why}"),
            other => prop_assert!(false, "a call classified as {other:?}"),
        }
    }

    #[test]
    fn the_reply_to_an_encoded_call_round_trips(
        id in any::<u64>(),
        sid in session_id(),
        method in any::<String>(),
        params in json_object(),
        extra in any::<String>(),
    ) {
        // What a browser does with our frame: keep id and sessionId, answer with a
        // result. Unknown members are ignored.
        let call: Value = serde_json::from_str(&encode_call(id, sid.as_deref(), &method, &params).unwrap()).unwrap();
        let mut reply = serde_json::Map::new();
        reply.insert("extra".into(), json!(extra));
        reply.insert("result".into(), call["params"].clone());
        reply.insert("id".into(), call["id"].clone());
        if let Some(s) = call.get("sessionId") {
            reply.insert("sessionId".into(), s.clone());
        }
        let text = Value::Object(reply).to_string();
        match classify(&text).unwrap() {
            Frame::Reply { id: got, session_id, outcome } => {
                prop_assert_eq!(got, id);
                prop_assert_eq!(session_id.as_deref(), sid.as_deref());
                let range = outcome.unwrap();
                let result: Value = serde_json::from_str(&text[range]).unwrap();
                prop_assert_eq!(result, params);
            }
            other => prop_assert!(false, "classified as {other:?}"),
        }
    }

    #[test]
    fn error_replies_round_trip(
        id in any::<u64>(),
        sid in session_id(),
        code in any::<i64>(),
        message in any::<String>(),
        with_result in any::<bool>(),
    ) {
        let mut reply = json!({"id": id, "error": {"code": code, "message": message}});
        if let Some(s) = &sid {
            reply["sessionId"] = json!(s);
        }
        if with_result {
            reply["result"] = json!({}); // an error wins over a result
        }
        let text = reply.to_string();
        match classify(&text).unwrap() {
            Frame::Reply { id: got, session_id, outcome } => {
                prop_assert_eq!(got, id);
                prop_assert_eq!(session_id.as_deref(), sid.as_deref());
                prop_assert_eq!(outcome, Err(CdpError { code, message }));
            }
            other => prop_assert!(false, "classified as {other:?}"),
        }
    }

    #[test]
    fn events_round_trip(
        method in any::<String>(),
        sid in session_id(),
        params in prop::option::of(json_object()),
    ) {
        let mut event = json!({"method": method});
        if let Some(s) = &sid {
            event["sessionId"] = json!(s);
        }
        if let Some(p) = &params {
            event["params"] = p.clone();
        }
        let text = event.to_string();
        match classify(&text).unwrap() {
            Frame::Event { method: got, session_id, params: range } => {
                prop_assert_eq!(got.as_ref(), method.as_str());
                prop_assert_eq!(session_id.as_deref(), sid.as_deref());
                match &params {
                    None => prop_assert!(range.is_empty()),
                    Some(p) => {
                        let back: Value = serde_json::from_str(&text[range]).unwrap();
                        prop_assert_eq!(&back, p);
                    }
                }
            }
            other => prop_assert!(false, "classified as {other:?}"),
        }
    }
}
