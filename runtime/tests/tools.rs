//! The built-in fs tools on a real directory: what they do, and that no path leaves the
//! workspace (traversal, absolute paths, symlinks pointing out).

use std::path::Path;

use retrace_runtime::spec::BUILTIN_TOOLS;
use retrace_runtime::tools::{Tier, ToolError, Toolbox, Workspace};
use serde_json::{Value, json};

fn setup() -> (tempfile::TempDir, tempfile::TempDir, Toolbox) {
    let root = tempfile::tempdir().expect("workspace");
    let outside = tempfile::tempdir().expect("outside");
    std::fs::write(outside.path().join("secret.txt"), "top secret\n").expect("write");
    std::fs::create_dir_all(root.path().join("docs/deep")).expect("mkdir");
    std::fs::write(
        root.path().join("README.md"),
        "# retrace\nline two\nthird line\n",
    )
    .expect("write");
    std::fs::write(
        root.path().join("docs/guide.md"),
        "retrace guide\nsee README\n",
    )
    .expect("write");
    std::fs::write(root.path().join("docs/deep/notes.txt"), "deep notes\n").expect("write");
    std::fs::write(root.path().join("blob.bin"), [0u8, 1, 2, 3]).expect("write");
    std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).expect("symlink");
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        root.path().join("secret-link.txt"),
    )
    .expect("symlink");
    let ws = Workspace::new(root.path()).expect("workspace");
    // the file tools (the others need a spec's settings, or are performed by the executor)
    let all: Vec<String> = BUILTIN_TOOLS
        .iter()
        .filter(|name| name.starts_with("fs."))
        .map(ToString::to_string)
        .collect();
    let tools = Toolbox::builtin(&ws, &all).expect("toolbox");
    (root, outside, tools)
}

#[allow(clippy::needless_pass_by_value)] // call sites build the arguments inline with json!
fn call(tools: &Toolbox, name: &str, args: Value) -> Result<Value, ToolError> {
    tools.get(name).expect("tool exists").call(&args)
}

#[test]
fn paths_outside_the_workspace_are_refused_by_every_tool() {
    let (_root, outside, tools) = setup();
    let outside_file = outside.path().join("secret.txt").display().to_string();
    let attempts = [
        ("fs.read", json!({"path": "../secret.txt"})),
        ("fs.read", json!({"path": "docs/../../secret.txt"})),
        ("fs.read", json!({"path": outside_file})),
        ("fs.read", json!({"path": "escape/secret.txt"})),
        ("fs.read", json!({"path": "secret-link.txt"})),
        ("fs.list", json!({"path": "escape"})),
        ("fs.search", json!({"pattern": "secret", "path": "escape"})),
        (
            "fs.write",
            json!({"path": "escape/planted.txt", "content": "x"}),
        ),
        (
            "fs.write",
            json!({"path": "../planted.txt", "content": "x"}),
        ),
        (
            "fs.edit",
            json!({"path": "secret-link.txt", "old": "top", "new": "no"}),
        ),
    ];
    for (tool, args) in attempts {
        let err =
            call(&tools, tool, args.clone()).expect_err(&format!("{tool} {args} must be refused"));
        assert!(
            matches!(err, ToolError::Refused { .. }),
            "{tool} {args}: {err}"
        );
        assert!(err.to_string().contains("refused"), "{err}");
    }
    // nothing leaked or was planted
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret.txt")).expect("read"),
        "top secret\n"
    );
    assert!(!outside.path().join("planted.txt").exists());
    // and searching the whole workspace does not follow the symlinks out
    let found = call(&tools, "fs.search", json!({"pattern": "top secret"})).expect("search");
    assert_eq!(found["matches"], json!([]));
}

#[test]
fn read_returns_whole_files_or_line_ranges() {
    let (_root, _outside, tools) = setup();
    let whole = call(&tools, "fs.read", json!({"path": "README.md"})).expect("read");
    assert_eq!(whole["content"], "# retrace\nline two\nthird line\n");
    assert_eq!(whole["total_lines"], 3);
    let range = call(
        &tools,
        "fs.read",
        json!({"path": "./docs/../README.md", "start_line": 2, "end_line": 3}),
    )
    .expect("read");
    assert_eq!(range["content"], "line two\nthird line");
    let err = call(
        &tools,
        "fs.read",
        json!({"path": "README.md", "start_line": 3, "end_line": 1}),
    )
    .expect_err("bad range");
    assert!(matches!(err, ToolError::Invalid { .. }), "{err}");
    let err = call(&tools, "fs.read", json!({"path": "missing.md"})).expect_err("missing");
    assert!(
        err.to_string().contains("cannot read `missing.md`"),
        "{err}"
    );
    let err =
        call(&tools, "fs.read", json!({"path": "README.md", "lines": 3})).expect_err("unknown arg");
    assert!(err.to_string().contains("unknown field `lines`"), "{err}");
}

#[test]
fn list_and_search_are_sorted_and_skip_binary_files() {
    let (_root, _outside, tools) = setup();
    let listed = call(&tools, "fs.list", json!({})).expect("list");
    let names: Vec<&str> = listed["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["path"].as_str().expect("path"))
        .collect();
    assert_eq!(
        names,
        ["README.md", "blob.bin", "docs", "escape", "secret-link.txt"]
    );
    let deep = call(
        &tools,
        "fs.list",
        json!({"path": "docs", "recursive": true}),
    )
    .expect("list");
    assert_eq!(deep["entries"].as_array().expect("entries").len(), 3);

    let found = call(&tools, "fs.search", json!({"pattern": "retrace"})).expect("search");
    let hits: Vec<(String, u64)> = found["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .map(|m| {
            (
                m["path"].as_str().expect("path").to_owned(),
                m["line"].as_u64().expect("line"),
            )
        })
        .collect();
    assert_eq!(
        hits,
        [("README.md".to_owned(), 1), ("docs/guide.md".to_owned(), 1)]
    );
    let regex = call(
        &tools,
        "fs.search",
        json!({"pattern": "^(line|third)", "regex": true}),
    )
    .expect("search");
    assert_eq!(regex["matches"].as_array().expect("matches").len(), 2);
    let err =
        call(&tools, "fs.search", json!({"pattern": "(", "regex": true})).expect_err("bad regex");
    assert!(err.to_string().contains("bad regex"), "{err}");
    let capped = call(
        &tools,
        "fs.search",
        json!({"pattern": "e", "max_matches": 2}),
    )
    .expect("search");
    assert_eq!(capped["truncated"], true);
}

#[test]
fn write_and_edit_change_files_inside_the_workspace() {
    let (root, _outside, tools) = setup();
    call(
        &tools,
        "fs.write",
        json!({"path": "out/new/summary.md", "content": "hello world\nhello again\n"}),
    )
    .expect("write");
    assert_eq!(
        std::fs::read_to_string(root.path().join("out/new/summary.md")).expect("read"),
        "hello world\nhello again\n"
    );
    let err = call(
        &tools,
        "fs.edit",
        json!({"path": "out/new/summary.md", "old": "hello", "new": "bye"}),
    )
    .expect_err("ambiguous");
    assert!(err.to_string().contains("occurs 2 times"), "{err}");
    call(
        &tools,
        "fs.edit",
        json!({"path": "out/new/summary.md", "old": "hello", "new": "bye", "count": 2}),
    )
    .expect("edit");
    assert_eq!(
        std::fs::read_to_string(root.path().join("out/new/summary.md")).expect("read"),
        "bye world\nbye again\n"
    );
    // re-running the same edit fails: the snippet is gone (which is why fs.edit is not idempotent)
    let err = call(
        &tools,
        "fs.edit",
        json!({"path": "out/new/summary.md", "old": "hello", "new": "bye", "count": 2}),
    )
    .expect_err("gone");
    assert!(err.to_string().contains("occurs 0 times"), "{err}");
}

#[test]
fn tools_declare_schema_tier_and_idempotence() {
    let (_root, _outside, tools) = setup();
    let infos = tools.infos();
    assert_eq!(
        infos.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        [
            "fs.append",
            "fs.edit",
            "fs.list",
            "fs.read",
            "fs.search",
            "fs.write"
        ]
    );
    for info in &infos {
        assert_eq!(info.schema["type"], "object", "{}", info.name);
        assert_eq!(info.schema["additionalProperties"], false, "{}", info.name);
        let expected = if ["fs.write", "fs.edit", "fs.append"].contains(&info.name.as_str()) {
            Tier::Write
        } else {
            Tier::Read
        };
        assert_eq!(info.tier, expected, "{}", info.name);
    }
    assert!(
        !infos
            .iter()
            .find(|i| i.name == "fs.edit")
            .expect("edit")
            .idempotent
    );
    let append = infos
        .iter()
        .find(|i| i.name == "fs.append")
        .expect("append");
    assert!(!append.idempotent);
    let ws = Workspace::new(Path::new(".")).expect("workspace");
    assert!(Toolbox::builtin(&ws, &["net.fetch".to_owned()]).is_err());
}

#[test]
fn append_adds_at_the_end_each_time() {
    let (root, _outside, tools) = setup();
    for line in ["one\n", "two\n"] {
        call(
            &tools,
            "fs.append",
            json!({"path": "logs/run.log", "text": line}),
        )
        .expect("append");
    }
    assert_eq!(
        std::fs::read_to_string(root.path().join("logs/run.log")).expect("read"),
        "one\ntwo\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn arguments_that_are_not_an_object_are_refused_with_what_was_sent() {
    let (_ws, _out, tools) = setup();
    // the raw text of arguments a model server sent that were not JSON
    let e = tools
        .call("fs.read", json!("path=README.md"))
        .await
        .expect_err("not an object");
    assert_eq!(
        e.to_string(),
        "invalid arguments: arguments are not a JSON object: path=README.md; send the arguments as one JSON object that fits the tool's schema"
    );
    let e = tools
        .call("fs.list", json!(["."]))
        .await
        .expect_err("not an object");
    assert!(e.to_string().contains("not a JSON object: [\".\"]"), "{e}");
    // `null` (a call recorded without arguments) is `{}`
    assert!(tools.call("fs.list", Value::Null).await.is_ok());
}
