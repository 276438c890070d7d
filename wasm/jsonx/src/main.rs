//! `json.transform`: select, project, sort and cut JSON, with no access to anything else.
//! Arguments: `{"input": <json>, "pointer": "/items", "fields": ["name"], "sort_by": "size",
//! "descending": true, "limit": 3}` (all but `input` optional).

use std::cmp::Ordering;
use std::io::Read;

use serde_json::{Map, Value};

fn main() {
    let mut input = String::new();
    let result = std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("cannot read the arguments: {e}"))
        .and_then(|_| run(&input));
    match result {
        Ok(value) => println!("{value}"),
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(1);
        }
    }
}

fn run(input: &str) -> Result<Value, String> {
    let args: Value = serde_json::from_str(input).map_err(|e| format!("arguments: {e}"))?;
    let data = args.get("input").ok_or("`input` is required")?;
    let pointer = args.get("pointer").and_then(Value::as_str).unwrap_or("");
    let mut selected = data
        .pointer(pointer)
        .cloned()
        .ok_or_else(|| format!("nothing at pointer `{pointer}`"))?;
    if let Some(items) = selected.as_array_mut() {
        if let Some(key) = args.get("sort_by").and_then(Value::as_str) {
            items.sort_by(|a, b| compare(a.get(key), b.get(key)));
            if args.get("descending").and_then(Value::as_bool) == Some(true) {
                items.reverse();
            }
        }
        if let Some(limit) = args.get("limit").and_then(Value::as_u64) {
            items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        if let Some(fields) = args.get("fields").and_then(Value::as_array) {
            for item in items.iter_mut() {
                *item = project(item, fields);
            }
        }
    } else if let Some(fields) = args.get("fields").and_then(Value::as_array) {
        selected = project(&selected, fields);
    }
    Ok(selected)
}

fn project(item: &Value, fields: &[Value]) -> Value {
    let mut out = Map::new();
    for field in fields.iter().filter_map(Value::as_str) {
        if let Some(v) = item.get(field) {
            out.insert(field.to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        _ => Ordering::Equal,
    }
}
