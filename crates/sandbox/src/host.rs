//! The engine, the compiled-component cache and one call of a tool under its limits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Cache, CacheConfig, Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::error::{Error, Limit};

/// How often the epoch advances: the granularity of the wall-time limit and the longest a
/// guest runs without yielding to the async executor.
const TICK: Duration = Duration::from_millis(10);

/// What a guest may write to stderr (kept for diagnostics).
const STDERR_BYTES: usize = 64 * 1024;

/// What one call may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (about one unit per WASM instruction); `None`: no fuel limit.
    pub fuel: Option<u64>,
    /// Wall time for the whole call, including time blocked in host calls.
    pub wall: Duration,
    /// Linear memory, in bytes.
    pub memory_bytes: u64,
    /// Bytes the guest may write to stdout; writing more stops it.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: Some(10_000_000_000),
            wall: Duration::from_secs(10),
            memory_bytes: 256 << 20,
            output_bytes: 16 << 20,
        }
    }
}

/// A host directory the guest sees under `guest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preopen {
    /// Directory on the host.
    pub host: PathBuf,
    /// Its path inside the guest, e.g. `/data`.
    pub guest: String,
    /// Whether the guest may create and change files in it.
    pub writable: bool,
}

/// One call: the arguments (stdin) and what the guest may reach.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    /// Bytes on the guest's stdin (the JSON arguments).
    pub stdin: &'a [u8],
    /// Limits.
    pub limits: Limits,
    /// Directories the guest sees; nothing else of the filesystem.
    pub preopens: &'a [Preopen],
    /// Environment variables the guest sees; nothing else of the environment.
    pub env: &'a [(String, String)],
}

/// What a guest that ran to its end left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// 0 for success.
    pub exit_code: i32,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// What was written to stderr (lossy UTF-8, at most 64 KiB).
    pub stderr: String,
    /// Fuel consumed, when fuel is limited.
    pub fuel_used: Option<u64>,
}

/// A compiled, pre-linked component: cheap to clone, instantiated afresh for every call.
#[derive(Clone)]
pub struct Module {
    hash: blake3::Hash,
    path: PathBuf,
    pre: CommandPre<Guest>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("path", &self.path)
            .field("blake3", &self.hash.to_hex().as_str())
            .finish_non_exhaustive()
    }
}

impl Module {
    /// BLAKE3 of the component's bytes, hex.
    pub fn blake3(&self) -> String {
        self.hash.to_hex().to_string()
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A guest's store data.
struct Guest {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for Guest {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Raised from the epoch callback when the wall-time limit passes.
#[derive(Debug)]
struct WallTimeUp;

impl std::fmt::Display for WallTimeUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("wall-time limit reached")
    }
}

impl std::error::Error for WallTimeUp {}

/// The host: one engine (and its epoch ticker) and the compiled components, by content.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<Guest>,
    compiled: Mutex<HashMap<blake3::Hash, Module>>,
    /// Dropping it stops the ticker thread.
    _ticker: mpsc::Sender<()>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").finish_non_exhaustive()
    }
}

impl Sandbox {
    /// A host; with `cache_dir`, compiled code is also kept on disk there, so a new process
    /// does not compile a component it has seen.
    pub fn new(cache_dir: Option<&Path>) -> Result<Self, Error> {
        let host = |e: wasmtime::Error| Error::Host(format!("{e:#}"));
        let mut config = Config::new();
        config.consume_fuel(true).epoch_interruption(true);
        if let Some(dir) = cache_dir {
            let mut cache = CacheConfig::new();
            cache.with_directory(dir);
            config.cache(Some(Cache::new(cache).map_err(host)?));
        }
        let engine = Engine::new(&config).map_err(host)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(host)?;
        let (ticker, stop) = mpsc::channel::<()>();
        let ticking = engine.clone();
        std::thread::Builder::new()
            .name("retrace-sandbox-epoch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(TICK) {
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| Error::Host(format!("cannot start the epoch thread: {e}")))?;
        Ok(Self {
            engine,
            linker,
            compiled: Mutex::default(),
            _ticker: ticker,
        })
    }

    /// The component in `path`, compiled (once per content) and linked against WASI.
    pub fn load(&self, path: &Path) -> Result<Module, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.load_bytes(path, &bytes)
    }

    /// Like [`Self::load`], for bytes already read; `path` names them in errors.
    pub fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<Module, Error> {
        let hash = blake3::hash(bytes);
        if let Some(module) = self.cached(&hash) {
            return Ok(module);
        }
        let not_a_command = |e: wasmtime::Error| Error::NotACommand {
            path: path.to_path_buf(),
            why: format!("{e:#}"),
        };
        let component = Component::new(&self.engine, bytes).map_err(not_a_command)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(CommandPre::new)
            .map_err(not_a_command)?;
        let module = Module {
            hash,
            path: path.to_path_buf(),
            pre,
        };
        self.compiled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(hash, module.clone());
        Ok(module)
    }

    fn cached(&self, hash: &blake3::Hash) -> Option<Module> {
        self.compiled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(hash)
            .cloned()
    }

    /// Run `module` once under `call`'s limits. A guest that exits (with any code) gives an
    /// [`Output`]; one stopped by a limit or a trap gives the [`Error`] saying which.
    pub async fn run(&self, module: &Module, call: Call<'_>) -> Result<Output, Error> {
        let limits = call.limits;
        let stdout = MemoryOutputPipe::new(limits.output_bytes);
        let stderr = MemoryOutputPipe::new(STDERR_BYTES);
        let wasi = wasi_ctx(&call, &stdout, &stderr)?;
        let mut store = Store::new(
            &self.engine,
            Guest {
                wasi,
                table: ResourceTable::new(),
                limits: StoreLimitsBuilder::new()
                    .memory_size(usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX))
                    .trap_on_grow_failure(true)
                    .build(),
            },
        );
        store.limiter(|guest| &mut guest.limits);
        let fuel = limits.fuel.unwrap_or(u64::MAX);
        store
            .set_fuel(fuel)
            .map_err(|e| Error::Host(format!("{e:#}")))?;
        let deadline = Instant::now() + limits.wall;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(wasmtime::Error::new(WallTimeUp))
            } else {
                Ok(wasmtime::UpdateDeadline::Yield(1))
            }
        });

        let wall_ms = u64::try_from(limits.wall.as_millis()).unwrap_or(u64::MAX);
        let result = {
            let running = async {
                let command = module.pre.instantiate_async(&mut store).await?;
                command.wasi_cli_run().call_run(&mut store).await
            };
            // The epoch stops a guest that computes; this also stops one blocked in a host
            // call (a read of a slow pipe, a sleep) that never reaches an epoch check.
            tokio::time::timeout(limits.wall + TICK * 5, running).await
        };
        let stderr_text = || String::from_utf8_lossy(&stderr.contents()).into_owned();
        let exit_code = match result {
            Err(_elapsed) => {
                return Err(Error::Limit {
                    limit: Limit::WallTime(wall_ms),
                    stderr: stderr_text(),
                });
            }
            Ok(Ok(Ok(()))) => 0,
            Ok(Ok(Err(()))) => 1,
            Ok(Err(e)) => {
                if let Some(exit) = e.downcast_ref::<I32Exit>() {
                    exit.0
                } else {
                    let limit = if e.downcast_ref::<WallTimeUp>().is_some() {
                        Some(Limit::WallTime(wall_ms))
                    } else if e.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel) {
                        Some(Limit::Fuel(fuel))
                    } else if format!("{e:?}").contains("forcing trap when growing memory") {
                        Some(Limit::Memory(limits.memory_bytes))
                    } else if stdout.contents().len() + 1 >= limits.output_bytes
                        || format!("{e:?}").contains("beyond capacity")
                    {
                        Some(Limit::Output(limits.output_bytes))
                    } else {
                        None
                    };
                    return Err(match limit {
                        Some(limit) => Error::Limit {
                            limit,
                            stderr: stderr_text(),
                        },
                        None => Error::Trap {
                            trap: format!("{e:#}"),
                            stderr: stderr_text(),
                        },
                    });
                }
            }
        };
        let fuel_used = limits
            .fuel
            .map(|f| f.saturating_sub(store.get_fuel().unwrap_or(0)));
        Ok(Output {
            exit_code,
            stdout: stdout.contents().to_vec(),
            stderr: stderr_text(),
            fuel_used,
        })
    }
}

/// The guest's view of the world: stdio in memory, the preopens, the listed variables, no
/// network at all.
fn wasi_ctx(
    call: &Call<'_>,
    stdout: &MemoryOutputPipe,
    stderr: &MemoryOutputPipe,
) -> Result<WasiCtx, Error> {
    let mut wasi = WasiCtxBuilder::new();
    // File operations run on this thread rather than hopping to tokio's blocking pool: a
    // tool reads small files, and the two thread hand-offs per operation cost more than the
    // read (10.5 ms against 1.3 ms for 20 small files, measured). Set before the preopens, which
    // take it from the builder.
    wasi.allow_blocking_current_thread(true);
    wasi.stdin(MemoryInputPipe::new(call.stdin.to_vec()))
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    for (name, value) in call.env {
        wasi.env(name, value);
    }
    for dir in call.preopens {
        let perms = if dir.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        wasi.preopened_dir(&dir.host, &dir.guest, perms)
            .map_err(|e| Error::Preopen {
                host: dir.host.clone(),
                guest: dir.guest.clone(),
                why: format!("{e:#}"),
            })?;
    }
    Ok(wasi.build())
}
