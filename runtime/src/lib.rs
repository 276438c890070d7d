//! # retrace-runtime
//!
//! The durable executor: runs an agent spec, writing each effect's intent before performing it
//! and its outcome before the next decision, so a killed job resumes exactly.
//!
//! Status: placeholder until the runtime issue; it depends on the layers below it so the
//! dependency direction is fixed now.
