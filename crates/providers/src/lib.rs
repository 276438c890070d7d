//! # retrace-providers
//!
//! Model clients behind one [`Provider`] trait: the [`scripted`] cassette player (the
//! offline default for demos and tests), and the [`openai`]-compatible and [`anthropic`]
//! clients over reqwest (streamed over SSE). All share one shape: a provider-neutral request, text streamed as
//! [`Delta`]s, an assembled [`ModelReply`] with token usage, and failures typed as transient
//! or permanent.
#![deny(missing_docs)]

pub mod anthropic;
mod error;
pub mod http;
pub mod openai;
pub mod record;
pub mod scripted;
mod types;

use std::future::Future;
use std::pin::Pin;

pub use anthropic::Anthropic;
pub use error::Error;
pub use http::{HttpSettings, SetupError};
pub use openai::OpenAi;
pub use record::Recorder;
pub use scripted::{Cassette, CassetteError, Scripted, ScriptedError, ScriptedReply};
pub use types::{
    ChatMessage, Delta, ModelReply, ModelRequest, Reasoning, TokenUsage, ToolCall, ToolDef,
};

/// A boxed future, so `Provider` can be used as `dyn Provider`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A model client.
pub trait Provider: Send + Sync {
    /// Short name for logs and errors (`scripted`, `openai`, `anthropic`).
    fn name(&self) -> &'static str;

    /// Ask the model. Text is passed to `on_delta` as it arrives; the assembled reply is
    /// returned once complete.
    fn complete<'a>(
        &'a self,
        request: &'a ModelRequest,
        on_delta: &'a mut (dyn FnMut(Delta) + Send),
    ) -> BoxFuture<'a, Result<ModelReply, Error>>;
}

impl<T: Provider + ?Sized> Provider for Box<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn complete<'a>(
        &'a self,
        request: &'a ModelRequest,
        on_delta: &'a mut (dyn FnMut(Delta) + Send),
    ) -> BoxFuture<'a, Result<ModelReply, Error>> {
        (**self).complete(request, on_delta)
    }
}
