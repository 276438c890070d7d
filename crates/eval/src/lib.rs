//! # retrace-eval
//!
//! Replay-based regression evals: recorded runs replayed against new code, prompts or models.
//!
//! Status: placeholder until the evals issue.
