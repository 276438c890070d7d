//! # retrace-providers
//!
//! Model clients: a scripted cassette player (the offline default), OpenAI-compatible chat
//! completions and Anthropic messages over reqwest.
//!
//! Status: placeholder until the runtime and providers issues.
