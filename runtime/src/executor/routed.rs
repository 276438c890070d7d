//! Model calls routed between the spec's models ([`crate::routing`]): the choice, recorded
//! as `model_routed` with the call's intent, and the client of the chosen model.

use std::collections::BTreeMap;

use retrace_events::RunId;
use retrace_events::reply::ModelReply;
use retrace_providers::Provider;
use retrace_replay::State;

use super::{Error, Runner};
use crate::routing::{self, MAIN, Route};
use crate::spec::{Model, Spec};

/// The clients of `[[models]]`, by name.
pub(super) type Clients = BTreeMap<String, Box<dyn Provider>>;

/// The clients of `spec`'s `[[models]]`, made when the runner is: a fallback that cannot
/// be set up (a key missing, a cassette gone) is found before the run needs it, not when
/// `[model]` has failed.
pub(super) fn clients(spec: &Spec) -> Result<Clients, Error> {
    spec.models
        .iter()
        .map(|m| {
            let table = format!("[[models]] `{}`", m.name);
            crate::model::client(&spec.name, &table, &m.model)
                .map(|client| (m.name.clone(), client))
                .map_err(|e| Error::Setup(e.to_string()))
        })
        .collect()
}

impl Runner<'_> {
    /// Where the next model call goes, when the spec routes; `None` when it does not.
    pub(super) fn route(&self, run: RunId, state: &State) -> Result<Option<Route>, Error> {
        let Some(routing) = &self.spec.routing else {
            return Ok(None);
        };
        let reply: Option<ModelReply> = match routing::last_reply(state) {
            Some(blob) => self.blob_json(run, &blob).ok(),
            None => None,
        };
        routing::choose(routing, &self.spec.budgets, state, reply.as_ref())
            .map(Some)
            .ok_or_else(|| Error::Payload {
                run,
                what: "every model of the step failed, yet the run asked again (a bug)".into(),
            })
    }

    /// The settings of the model named `name` in routing.
    pub(super) fn model_named(&self, name: &str) -> Result<&Model, Error> {
        self.spec.model_named(name).ok_or_else(|| {
            Error::Setup(format!(
                "the run routes to the model `{name}`, which its spec does not declare"
            ))
        })
    }

    /// The client and settings of the model the pending call was routed to (`[model]`'s
    /// when the run does not route).
    pub(super) fn client_for(&self, state: &State) -> Result<(&dyn Provider, &Model), Error> {
        let name = state.models.current.as_deref().unwrap_or(MAIN);
        if name == MAIN {
            return Ok((&*self.provider, &self.spec.model));
        }
        let model = self.model_named(name)?;
        let client = self
            .routed
            .get(name)
            .ok_or_else(|| Error::Setup(format!("no client for the model `{name}`")))?;
        Ok((&**client, model))
    }
}
