//! Reading a `portdoctor.check/v1` report: values at dotted paths, pools and findings.

use std::net::IpAddr;

use serde_json::Value;

/// The value at a dotted PATH (`verdict.level`); panics naming the path when absent.
pub fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    let mut cur = v;
    for key in path.split('.') {
        cur = match cur {
            Value::Object(m) => m
                .get(key)
                .unwrap_or_else(|| panic!("report has no {path:?} (missing {key:?}): {v}")),
            Value::Array(a) => key
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get(i))
                .unwrap_or_else(|| panic!("report has no {path:?} (index {key:?})")),
            _ => panic!("report has no {path:?}: {key:?} of a non-object in {v}"),
        };
    }
    cur
}

pub fn u64_at(v: &Value, path: &str) -> u64 {
    at(v, path)
        .as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not an unsigned integer: {}", at(v, path)))
}

pub fn str_at<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string: {}", at(v, path)))
}

pub fn array_at<'a>(v: &'a Value, path: &str) -> &'a Vec<Value> {
    at(v, path)
        .as_array()
        .unwrap_or_else(|| panic!("{path:?} is not an array: {}", at(v, path)))
}

pub(super) fn ip_of(v: &Value, path: &str) -> IpAddr {
    let s = str_at(v, path);
    s.parse()
        .unwrap_or_else(|e| panic!("{path:?} = {s:?} is not an IP address: {e}"))
}

/// All pools of the report (any scope).
pub fn pools(report: &Value) -> &Vec<Value> {
    array_at(report, "pools")
}

/// The findings with CODE.
pub fn findings<'a>(report: &'a Value, code: &str) -> Vec<&'a Value> {
    array_at(report, "verdict.findings")
        .iter()
        .filter(|f| f["code"] == code)
        .collect()
}

/// Every finding code of the report (for messages).
pub fn finding_codes(report: &Value) -> Vec<String> {
    array_at(report, "verdict.findings")
        .iter()
        .map(|f| f["code"].as_str().unwrap_or("?").to_string())
        .collect()
}
