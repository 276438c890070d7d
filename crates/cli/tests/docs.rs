//! Every command shown in `README.md` and `docs/guide/*.md` runs as shown, through the real
//! binary.
//!
//! Each document is read top to bottom. Its ` ```sh ` blocks (every line a command) and
//! ` ```console ` blocks (the lines after `$ `) are run in document order by `sh -c`, in a
//! fresh temp directory holding a copy of `examples/` and nothing else, so the default store
//! `./.retrace` and every file a run writes land there. The rules:
//!
//! - `cargo run -p retrace-cli --` is the binary under test, which is also `retrace` on
//!   `PATH`.
//! - `RUN` stands for the id of the run the document's last `retrace run` started.
//! - `/tmp/` is the temp directory's `tmp/`, so nothing outside it is touched.
//! - A command exits 0, unless its comment says `exits N`.
//! - A block after `<!-- save as: PATH -->` (a suite or spec shown in full) is written to PATH
//!   in the copy, for the commands after it.
//! - Not run, each one named in the test's output and never silently:
//!   - a block after `<!-- not run: REASON -->` (a display, a daemon, a network, a WASM or
//!     npm build);
//!   - a line whose program builds or tests this repository or installs a toolchain
//!     (`cargo` other than `cargo run -p retrace-cli`, `bash .ci/run`, `rustup`, `npm`):
//!     that is what CI itself runs.
//!
//!   Any other program fails the test, as does a transcript with `$ ` lines in a block that
//!   is not ` ```console `: a new command in the docs is either run or explicitly set aside.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The documents checked; `every_guide_is_checked` keeps this list complete.
const GUIDES: [&str; 14] = [
    "cli.md",
    "concepts.md",
    "context.md",
    "evals.md",
    "getting-started.md",
    "hardening.md",
    "import-export.md",
    "inspector.md",
    "policy.md",
    "providers.md",
    "scaling-out.md",
    "serve.md",
    "team.md",
    "tools.md",
];

/// Programs that build or test the repository or install toolchains, with why they are not
/// run here.
const NOT_RUN_PROGRAMS: [(&str, &str); 5] = [
    ("cargo", "builds or tests the repository (CI runs it)"),
    (
        ".ci/with-postgres",
        "runs the test suite beside a PostgreSQL cluster (CI runs it)",
    ),
    ("bash", "runs CI itself"),
    ("rustup", "installs a toolchain"),
    ("npm", "installs Node packages"),
];

/// A command may take this long.
const TIMEOUT: Duration = Duration::from_mins(1);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn readme() {
    check("README.md");
}

#[test]
fn guide_cli() {
    check("docs/guide/cli.md");
}

#[test]
fn guide_concepts() {
    check("docs/guide/concepts.md");
}

#[test]
fn guide_context() {
    check("docs/guide/context.md");
}

#[test]
fn guide_evals() {
    check("docs/guide/evals.md");
}

#[test]
fn guide_getting_started() {
    check("docs/guide/getting-started.md");
}

#[test]
fn guide_import_export() {
    check("docs/guide/import-export.md");
}

#[test]
fn guide_hardening() {
    check("docs/guide/hardening.md");
}

#[test]
fn guide_inspector() {
    check("docs/guide/inspector.md");
}

#[test]
fn guide_providers() {
    check("docs/guide/providers.md");
}

#[test]
fn guide_scaling_out() {
    check("docs/guide/scaling-out.md");
}

#[test]
fn guide_serve() {
    check("docs/guide/serve.md");
}

#[test]
fn guide_policy() {
    check("docs/guide/policy.md");
}

#[test]
fn guide_team() {
    check("docs/guide/team.md");
}

#[test]
fn guide_tools() {
    check("docs/guide/tools.md");
}

#[test]
fn every_guide_is_checked() {
    let mut found: Vec<String> = std::fs::read_dir(repo().join("docs/guide"))
        .expect("docs/guide")
        .map(|e| e.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .map(|path| {
            path.file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    found.sort();
    assert_eq!(
        found, GUIDES,
        "a guide was added or removed: give it a test above and list it in GUIDES"
    );
}

/// One fenced block of a document.
struct Block {
    /// 1-based line of its opening fence.
    line: usize,
    lang: String,
    /// The `<!-- … -->` marker on the last non-blank line before the fence, if any.
    marker: Option<String>,
    lines: Vec<String>,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    let mut last_text: Option<&str> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(fence) = line.strip_prefix("```") {
            if let Some(block) = open.take() {
                out.push(block);
            } else {
                let marker = last_text
                    .and_then(|l| l.trim().strip_prefix("<!--"))
                    .and_then(|l| l.strip_suffix("-->"))
                    .map(|m| m.trim().to_owned());
                open = Some(Block {
                    line: i + 1,
                    lang: fence.trim().to_owned(),
                    marker,
                    lines: Vec::new(),
                });
            }
            last_text = None;
            continue;
        }
        match &mut open {
            Some(block) => block.lines.push(line.to_owned()),
            None if !line.trim().is_empty() => last_text = Some(line),
            None => {}
        }
    }
    assert!(open.is_none(), "a fenced block is never closed");
    out
}

/// The commands of a shell block: continuation lines joined, comment-only lines left out.
fn commands(block: &Block) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut pending = String::new();
    for line in &block.lines {
        let line = match block.lang.as_str() {
            "console" => match line.strip_prefix("$ ") {
                Some(command) => command,
                None if !pending.is_empty() => line.as_str(),
                None => continue, // output
            },
            _ => line.as_str(),
        };
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        let command = std::mem::take(&mut pending);
        let trimmed = command.trim();
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            out.push(trimmed.to_owned());
        }
    }
    out
}

/// What a document's commands ran in, and what they left behind.
struct Session {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The id the last `retrace run` printed.
    run: Option<String>,
    /// What was run and what was not, one line each, for the test's output.
    log: Vec<String>,
    /// Commands run, and commands set aside.
    ran: usize,
    not_run: usize,
}

impl Session {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        copy_dir(&repo().join("examples"), &dir.path().join("examples"));
        std::fs::create_dir(dir.path().join("tmp")).expect("tmp");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_retrace"), bin.join("retrace"))
            .expect("link the binary");
        Self {
            dir,
            bin,
            run: None,
            log: Vec::new(),
            ran: 0,
            not_run: 0,
        }
    }

    /// `command` as it runs here: the binary, the run id, the temp directory.
    fn rewrite(&self, command: &str, at: &str) -> String {
        let mut line = command.replace("cargo run -p retrace-cli -- ", "retrace ");
        let tmp = format!("{}/tmp/", self.dir.path().display());
        line = line.replace("/tmp/", &tmp);
        if has_word(&line, "RUN") {
            let run = self.run.as_deref().unwrap_or_else(|| {
                panic!("{at}: `{command}` names RUN before any `retrace run` printed one")
            });
            line = replace_word(&line, "RUN", run);
        }
        line
    }

    fn execute(&mut self, command: &str, at: &str) {
        let line = self.rewrite(command, at);
        let program = line.split_whitespace().next().unwrap_or_default();
        if program != "retrace"
            && let Some((_, why)) = NOT_RUN_PROGRAMS.iter().find(|(p, _)| *p == program)
        {
            self.log
                .push(format!("  not run  {at}: {command}  ({why})"));
            self.not_run += 1;
            return;
        }
        assert!(
            program == "retrace" || program == "echo",
            "{at}: `{command}`: the doc test runs `retrace` (and `echo` to write files); \
             mark the block `<!-- not run: REASON -->` or teach the test this program"
        );
        let expected = expected_code(command);
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&line)
            .current_dir(self.dir.path())
            .env("PATH", path_with(&self.bin))
            .env("USER", "docs")
            .env("HOME", self.dir.path())
            .env_remove("RETRACE_STORE")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sh");
        let started = Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if started.elapsed() > TIMEOUT {
                let _ = child.kill();
                panic!("{at}: `{command}` still runs after {TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(expected),
            "{at}: `{command}` (run as `{line}`) exited {:?}, the doc implies {expected}\n\
             stdout:\n{stdout}\nstderr:\n{stderr}",
            out.status.code()
        );
        if subcommand(&line) == Some("run")
            && let Some(run) = started_run(&stdout)
        {
            self.run = Some(run);
        }
        self.log
            .push(format!("  ran      {at}: {command}  (exit {expected})"));
        self.ran += 1;
    }
}

/// Run the shell blocks of `doc` (relative to the repository) in order.
fn check(doc: &str) {
    let text = std::fs::read_to_string(repo().join(doc)).expect("read the doc");
    let mut session = Session::new();
    for block in blocks(&text) {
        let at = format!("{doc}:{}", block.line);
        let marker = block.marker.as_deref().unwrap_or_default();
        if let Some(path) = marker.strip_prefix("save as:") {
            let path = session.dir.path().join(path.trim());
            std::fs::write(&path, block.lines.join("\n") + "\n").expect("save the block");
            session
                .log
                .push(format!("  saved    {at} as {}", path.display()));
            continue;
        }
        if !matches!(block.lang.as_str(), "sh" | "console") {
            assert!(
                !block.lines.iter().any(|l| l.starts_with("$ ")),
                "{at}: a transcript in a ```{} block: make it ```console so its commands run \
                 (or are marked not run)",
                block.lang
            );
            continue;
        }
        if let Some(reason) = marker.strip_prefix("not run:") {
            let skipped = commands(&block).len();
            session.log.push(format!(
                "  not run  {at}: {skipped} command(s)  ({})",
                reason.trim()
            ));
            session.not_run += skipped;
            continue;
        }
        assert!(marker.is_empty(), "{at}: unknown marker <!-- {marker} -->");
        for (i, command) in commands(&block).iter().enumerate() {
            session.execute(command, &format!("{at}+{}", i + 1));
        }
    }
    eprintln!(
        "{doc}: {} command(s) run, {} not run\n{}",
        session.ran,
        session.not_run,
        session.log.join("\n")
    );
}

/// The exit code a command's comment promises (`# … exits 2 …`), else 0.
fn expected_code(command: &str) -> i32 {
    command
        .split_once(" #")
        .and_then(|(_, comment)| {
            let words: Vec<&str> = comment.split_whitespace().collect();
            words
                .windows(2)
                .find(|w| w[0] == "exits")
                .and_then(|w| w[1].trim_end_matches([',', ')', '.', ';']).parse().ok())
        })
        .unwrap_or(0)
}

/// The subcommand of a `retrace` command line (`--store DIR` skipped).
fn subcommand(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace().skip(1);
    while let Some(word) = words.next() {
        if word == "--store" {
            words.next();
        } else if !word.starts_with("--") {
            return Some(word);
        }
    }
    None
}

/// The id in `run <32 hex> …`, or a line that is an id alone (`run --detach`).
fn started_run(stdout: &str) -> Option<String> {
    stdout.lines().find_map(|line| {
        let id = line.strip_prefix("run ").unwrap_or(line);
        let id = id.split_whitespace().next()?;
        (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
    })
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `word` at `i` in `text`, not inside a longer word.
fn word_at(text: &str, i: usize, word: &str) -> bool {
    let bytes = text.as_bytes();
    text[i..].starts_with(word)
        && (i == 0 || !is_word_byte(bytes[i - 1]))
        && bytes.get(i + word.len()).is_none_or(|b| !is_word_byte(*b))
}

fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word)
        .any(|(i, _)| word_at(text, i, word))
}

fn replace_word(text: &str, word: &str, with: &str) -> String {
    let mut out = String::new();
    let mut rest = 0;
    for (i, _) in text.match_indices(word) {
        if word_at(text, i, word) {
            out.push_str(&text[rest..i]);
            out.push_str(with);
            rest = i + word.len();
        }
    }
    out.push_str(&text[rest..]);
    out
}

fn path_with(bin: &Path) -> std::ffi::OsString {
    let mut dirs = vec![bin.to_path_buf()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).expect("PATH")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn the_rules_read_commands_as_a_shell_would() {
    let block = Block {
        line: 1,
        lang: "console".into(),
        marker: None,
        lines: vec![
            "$ retrace check --all   # exits 2".into(),
            "DIFF  82261a24  decision 2".into(),
            "$ retrace run a.toml \\".into(),
            "    --input x".into(),
        ],
    };
    let found = commands(&block);
    assert_eq!(
        found,
        [
            "retrace check --all   # exits 2",
            "retrace run a.toml     --input x"
        ]
    );
    assert_eq!(expected_code(&found[0]), 2);
    assert_eq!(expected_code("retrace runs # the runs"), 0);
    assert_eq!(subcommand("retrace --store /x eval s.toml"), Some("eval"));
    assert_eq!(
        replace_word("retrace show RUN@14 RUNS xRUN", "RUN", "ab"),
        "retrace show ab@14 RUNS xRUN"
    );
    let id = "525fb43d0a1b4c2d8e9f001122334455";
    assert_eq!(
        started_run(&format!("run {id} (tidy) started in .retrace\n")),
        Some(id.into())
    );
    assert_eq!(started_run("usage: 4 steps\n"), None);
}
