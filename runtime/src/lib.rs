//! # retrace-runtime
//!
//! The durable executor: runs an agent spec, writing each effect's intent before performing it
//! and its outcome before the next decision, so a killed job resumes exactly.
//!
//! Agent specs ([`spec`]), the pure decision function ([`decide`]), the executor that
//! performs decisions through one durable-effect path ([`executor`]), built-in tools and
//! policy, graduated autonomy ([`autonomy`]), model clients from a spec ([`model`]) and routing
//! between them ([`routing`]), the context engine ([`context`]; request
//! records are `retrace_replay::request`), and
//! the one place where non-determinism enters retrace — the wall clock, fresh run ids and
//! retry jitter ([`entropy`]) — so pure crates never need to touch them (brief, invariant 7).

pub mod autonomy;
pub mod context;
pub mod decide;
pub mod delegate;
pub mod entropy;
pub mod executor;
pub mod hooks;
pub mod inbox;
pub mod model;
pub mod policy;
pub mod routing;
pub mod skills;
pub mod spec;
pub mod tools;
