//! The tiny "JavaScript engine" behind the simulated `Runtime.evaluate`.
//!
//! Owns nothing: a pure function from an expression and the page it runs in to a CDP
//! `RemoteObject`. It understands only what crawler tests ask for (literals, one binary
//! arithmetic operator, a few page properties, an endless loop) and must never panic on
//! any input.

use serde_json::{json, Value};

/// What the page looks like to an expression.
pub(crate) struct PageView<'a> {
    pub url: &'a str,
    pub title: &'a str,
}

/// The outcome of evaluating one expression.
#[derive(Debug, PartialEq)]
pub(crate) enum Evaluation {
    /// A `Runtime.evaluate` result object (`{result: RemoteObject}`).
    Value(Value),
    /// The expression threw: the result carries `exceptionDetails`.
    Exception(Value),
    /// The expression never finishes (`while(true){}`): the renderer is hung.
    Hang,
}

/// `window.innerWidth` of every simulated page (Chrome's headless default).
const INNER_WIDTH: i64 = 800;

/// Evaluates `expression` against `page`.
pub(crate) fn evaluate(expression: &str, page: &PageView<'_>) -> Evaluation {
    let expr = expression.trim().trim_end_matches(';').trim();
    let compact: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.starts_with("while(true)") || compact.starts_with("for(;;)") {
        return Evaluation::Hang;
    }
    match expr {
        "document.title" => return string(page.title),
        "location.href" | "window.location.href" | "document.URL" => return string(page.url),
        "document.documentElement.outerHTML" => return string(&fake_html(page.title)),
        "window.innerWidth" | "innerWidth" => return number(INNER_WIDTH as f64),
        "true" => return boolean(true),
        "false" => return boolean(false),
        "undefined" => return Evaluation::Value(json!({"result": {"type": "undefined"}})),
        "null" => {
            return Evaluation::Value(
                json!({"result": {"type": "object", "subtype": "null", "value": null}}),
            )
        }
        _ => {}
    }
    if let Some(s) = string_literal(expr) {
        return string(s);
    }
    if let Some(n) = number_literal(expr) {
        return number(n);
    }
    if let Some(n) = arithmetic(expr) {
        return number(n);
    }
    reference_error(expr)
}

fn string(s: &str) -> Evaluation {
    Evaluation::Value(json!({"result": {"type": "string", "value": s}}))
}

fn boolean(b: bool) -> Evaluation {
    Evaluation::Value(json!({"result": {"type": "boolean", "value": b}}))
}

fn number(n: f64) -> Evaluation {
    let description = js_number(n);
    let result = if !n.is_finite() {
        json!({"type": "number", "unserializableValue": description, "description": description})
    } else if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
        // Integral values serialize as JSON integers, as Chrome does ("1+1" gives 2, not 2.0).
        json!({"type": "number", "value": n as i64, "description": description})
    } else {
        json!({"type": "number", "value": n, "description": description})
    };
    Evaluation::Value(json!({ "result": result }))
}

/// Formats a number the way JavaScript's `String(n)` does for the common cases.
fn js_number(n: f64) -> String {
    if n.is_nan() {
        "NaN".into()
    } else if n.is_infinite() {
        if n > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if n == 0.0 {
        "0".into()
    } else {
        format!("{n}")
    }
}

fn string_literal(expr: &str) -> Option<&str> {
    let quote = expr.chars().next()?;
    if !matches!(quote, '"' | '\'' | '`') || expr.len() < 2 || !expr.ends_with(quote) {
        return None;
    }
    let inner = &expr[1..expr.len() - 1];
    // One literal only: "a" + "b" is not a literal.
    (!inner.contains(quote) && !inner.contains('\\')).then_some(inner)
}

fn number_literal(expr: &str) -> Option<f64> {
    let body = expr.strip_prefix('-').unwrap_or(expr);
    let first = body.chars().next()?;
    // Rust's parser accepts "inf" and "NaN"; JavaScript identifiers are not numbers here.
    if !(first.is_ascii_digit() || first == '.')
        || !body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
    {
        return None;
    }
    expr.parse().ok()
}

/// `a op b` with two number literals and one of `+ - * /`.
fn arithmetic(expr: &str) -> Option<f64> {
    for (i, op) in expr.char_indices().skip(1) {
        if !matches!(op, '+' | '-' | '*' | '/') {
            continue;
        }
        // Skip the sign of an exponent ("1e+3").
        if matches!(op, '+' | '-') && expr[..i].ends_with(['e', 'E']) {
            continue;
        }
        let (Some(a), Some(b)) = (
            number_literal(expr[..i].trim()),
            number_literal(expr[i + 1..].trim()),
        ) else {
            continue;
        };
        return Some(match op {
            '+' => a + b,
            '-' => a - b,
            '*' => a * b,
            _ => a / b,
        });
    }
    None
}

fn reference_error(expr: &str) -> Evaluation {
    let name: String = expr
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
        .collect();
    let name = if name.is_empty() { "expression" } else { &name };
    let description = format!("ReferenceError: {name} is not defined\n    at <anonymous>:1:1");
    let exception = json!({
        "type": "object",
        "subtype": "error",
        "className": "ReferenceError",
        "description": description,
    });
    Evaluation::Exception(json!({
        "result": exception,
        "exceptionDetails": {
            "exceptionId": 1,
            "text": "Uncaught",
            "lineNumber": 0,
            "columnNumber": 0,
            "exception": exception,
        },
    }))
}

/// The document of every simulated page: a title and two links, enough for a crawler to
/// extract something.
pub(crate) fn fake_html(title: &str) -> String {
    let title = escape_html(title);
    format!(
        "<html><head><title>{title}</title></head><body><h1>{title}</h1>\
         <a href=\"/link/1\">one</a> <a href=\"/link/2\">two</a></body></html>"
    )
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: PageView<'static> = PageView {
        url: "https://example.com/a",
        title: "sim: /a",
    };

    fn value(expr: &str) -> Value {
        match evaluate(expr, &PAGE) {
            Evaluation::Value(v) => v["result"].clone(),
            other => panic!("{expr}: {other:?}"),
        }
    }

    #[test]
    fn arithmetic_and_literals() {
        assert_eq!(
            value("1+1"),
            json!({"type": "number", "value": 2, "description": "2"})
        );
        assert_eq!(value("6 * 7")["value"], 42);
        assert_eq!(value("0.5")["value"], 0.5);
        assert_eq!(value("1e+3")["value"], 1000);
        assert_eq!(value("-2 - -3")["value"], 1);
        assert_eq!(value("1/0")["unserializableValue"], "Infinity");
        assert_eq!(value("'hi'")["value"], "hi");
        assert_eq!(value("true")["value"], true);
        assert_eq!(value("document.title")["value"], "sim: /a");
        assert_eq!(value("location.href")["value"], "https://example.com/a");
        assert_eq!(value("window.innerWidth")["value"], 800);
        assert!(value("document.documentElement.outerHTML")["value"]
            .as_str()
            .unwrap()
            .contains("<title>sim: /a</title>"));
    }

    #[test]
    fn hang_and_errors() {
        assert_eq!(evaluate("while(true){}", &PAGE), Evaluation::Hang);
        assert_eq!(evaluate(" while (true) { }", &PAGE), Evaluation::Hang);
        for bad in ["foo.bar", "", "inf", "NaN+1", "\"a\"+\"b\"", "é", "1+", "+"] {
            assert!(
                matches!(evaluate(bad, &PAGE), Evaluation::Exception(_)),
                "{bad}"
            );
        }
    }
}
