//! A test guest for the sandbox: does the one thing its arguments ask, many of them
//! forbidden, and reports what happened. `{"do": "echo" | "loop" | "alloc", "mb": 1024 |
//! "read", "path": ".." | "write", "path": ".." | "connect", "addr": ".." | "print",
//! "bytes": n | "env", "name": ".."}`.

use std::io::{Read, Write};

use serde_json::{Value, json};

fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).expect("stdin");
    let args: Value = serde_json::from_str(&input).expect("arguments");
    let arg = |k: &str| args.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let result: Result<Value, String> = match arg("do").as_str() {
        "echo" => Ok(args.clone()),
        "loop" => {
            let mut x: u64 = 1;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
            }
        }
        "alloc" => {
            let mb = args.get("mb").and_then(Value::as_u64).unwrap_or(1024) as usize;
            let mut v: Vec<u8> = Vec::new();
            v.resize(mb << 20, 1);
            Ok(json!({"allocated_mb": mb, "checksum": v.iter().map(|&b| u64::from(b)).sum::<u64>()}))
        }
        "read" => std::fs::read_to_string(arg("path"))
            .map(|text| json!({"read": text}))
            .map_err(|e| format!("read {}: {e}", arg("path"))),
        "write" => std::fs::write(arg("path"), b"written by a guest")
            .map(|()| json!({"wrote": arg("path")}))
            .map_err(|e| format!("write {}: {e}", arg("path"))),
        "connect" => std::net::TcpStream::connect(arg("addr"))
            .map(|_| json!({"connected": arg("addr")}))
            .map_err(|e| format!("connect {}: {e}", arg("addr"))),
        "print" => {
            let n = args.get("bytes").and_then(Value::as_u64).unwrap_or(0) as usize;
            let mut out = std::io::stdout().lock();
            out.write_all(b"{\"text\":\"").expect("stdout");
            for chunk in vec![b'x'; n].chunks(64 * 1024) {
                out.write_all(chunk).expect("stdout");
            }
            out.write_all(b"\"}").expect("stdout");
            return;
        }
        "env" => Ok(json!({"value": std::env::var(arg("name")).ok()})),
        other => Err(format!("unknown action `{other}`")),
    };
    match result {
        Ok(value) => println!("{value}"),
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(1);
        }
    }
}
