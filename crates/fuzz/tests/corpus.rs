//! Every fuzz target on every `cargo test` (stable Rust, no fuzzer): over its seed corpus
//! (`fuzz/corpus/<target>/seed-*`), over the inputs of past findings
//! (`fuzz/regressions/<target>/*`, each a crash the fuzzer found and a fix made pass), and
//! over mutants of each seed (bytes flipped, cut, inserted, repeated).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use retrace_fuzz::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    out.sort();
    out
}

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % below.max(1) as u64).expect("below a usize")
    }
}

fn mutant(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..=rng.next(3) {
        let at = rng.next(out.len() + 1);
        match rng.next(5) {
            0 if at < out.len() => out[at] ^= 1 << rng.next(8),
            1 => out.truncate(at),
            2 => out.insert(at, u8::try_from(rng.next(256)).expect("a byte")),
            3 if at < out.len() => {
                let end = (at + rng.next(16)).min(out.len());
                let piece = out[at..end].to_vec();
                out.splice(at..at, piece);
            }
            _ if at < out.len() => out[at] = [0, 0xff, b'"', b'{', b'\n'][rng.next(5)],
            _ => {}
        }
    }
    out
}

fn run(name: &str, target: fn(&[u8]), data: &[u8], what: &str) {
    assert!(
        catch_unwind(AssertUnwindSafe(|| target(data))).is_ok(),
        "fuzz target {name} panicked on {what}; keep the input in fuzz/regressions/{name}/"
    );
}

#[test]
fn every_target_takes_its_seeds_its_past_findings_and_their_mutants() {
    let mut total = 0;
    for &(name, target) in TARGETS {
        let seeds = files(&fuzz_dir().join("corpus").join(name), "seed-");
        assert!(
            !seeds.is_empty(),
            "fuzz target {name} has no seeds in fuzz/corpus/{name}/; run `bash fuzz/seed.sh`"
        );
        for file in files(&fuzz_dir().join("regressions").join(name), "") {
            run(
                name,
                target,
                &std::fs::read(&file).expect("read"),
                &file.display().to_string(),
            );
            total += 1;
        }
        let mut rng = Rng(0x5eed_f022);
        for file in &seeds {
            let seed = std::fs::read(file).expect("read a seed");
            run(name, target, &seed, &file.display().to_string());
            for i in 0..48 {
                let data = mutant(&seed, &mut rng);
                run(
                    name,
                    target,
                    &data,
                    &format!("mutant {i} of {}: {data:?}", file.display()),
                );
            }
            total += 49;
        }
    }
    eprintln!("{total} inputs over {} targets", TARGETS.len());
}

#[test]
fn the_fuzzer_builds_exactly_the_targets_the_library_lists() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let mut binaries: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "retrace-fuzz-targets")
        .collect();
    binaries.sort_unstable();
    let mut listed: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    listed.sort_unstable();
    assert_eq!(binaries, listed);
    for name in listed {
        let source =
            std::fs::read_to_string(fuzz_dir().join("fuzz_targets").join(format!("{name}.rs")))
                .unwrap_or_else(|e| panic!("fuzz/fuzz_targets/{name}.rs: {e}"));
        assert!(
            source.contains(&format!("retrace_fuzz::{name}(data)")),
            "{name}.rs"
        );
    }
}
