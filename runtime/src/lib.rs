//! # retrace-runtime
//!
//! The durable executor: runs an agent spec, writing each effect's intent before performing it
//! and its outcome before the next decision, so a killed job resumes exactly.
//!
//! Status: the agent loop, tools, policy and resume are in progress. What is here: agent
//! specs ([`spec`]) and the one place where non-determinism enters retrace — the wall clock
//! and fresh run ids ([`entropy`]) — so pure crates never need to touch either (brief,
//! invariant 7).

pub mod decide;
pub mod entropy;
pub mod executor;
pub mod policy;
pub mod request;
pub mod spec;
pub mod tools;
