//! Hooks run around a live tool call (see [`crate::hooks`]): each decision recorded as a
//! `hook_decided` before what it caused.

use retrace_events::{BlobId, EventKind, HookStage, RunId};
use serde_json::Value;

use super::{Error, Runner};
use crate::hooks::{self, Decision, Hook, Ran};
use crate::tools::Workspace;
use crate::tools::exec::Exec;

/// What the before-hooks made of a call.
pub(super) enum Before {
    /// Run it, with these arguments.
    Run(BlobId),
    /// Refuse it, for this reason.
    Deny(String),
}

impl Runner<'_> {
    /// Run the before-hooks that apply to a call of `tool` with `args`; their decisions,
    /// and what to do with the call. A denial stops at the hook that denied; a rewrite
    /// hands the new arguments to the next hook.
    pub(super) async fn before_hooks(
        &self,
        run: RunId,
        call_id: &str,
        tool: &str,
        args: BlobId,
    ) -> Result<(Vec<EventKind>, Before), Error> {
        let mut decided = Vec::new();
        let mut args = args;
        for hook in self.hooks(HookStage::BeforeTool, tool) {
            let value: Value = self.blob_json(run, &args)?;
            let input = hooks::input(
                HookStage::BeforeTool,
                &run.to_string(),
                &self.spec.name,
                call_id,
                tool,
                &value,
                None,
            );
            let decision = self.run_hook(hook, HookStage::BeforeTool, &input).await;
            decided.push(self.decided(call_id, hook, HookStage::BeforeTool, &decision)?);
            match decision {
                Decision::Deny { reason } => return Ok((decided, Before::Deny(reason))),
                Decision::Rewrite { args: new } => args = self.put_json(&new)?,
                Decision::Allow | Decision::Note { .. } => {}
            }
        }
        Ok((decided, Before::Run(args)))
    }

    /// Run the after-hooks that apply to a call's result; their decisions and the notes
    /// they added.
    pub(super) async fn after_hooks(
        &self,
        run: RunId,
        call_id: &str,
        tool: &str,
        args: &Value,
        output: &Value,
        is_error: bool,
    ) -> Result<(Vec<EventKind>, Vec<String>), Error> {
        let mut decided = Vec::new();
        let mut notes = Vec::new();
        for hook in self.hooks(HookStage::AfterTool, tool) {
            let input = hooks::input(
                HookStage::AfterTool,
                &run.to_string(),
                &self.spec.name,
                call_id,
                tool,
                args,
                Some((output, is_error)),
            );
            let decision = self.run_hook(hook, HookStage::AfterTool, &input).await;
            decided.push(self.decided(call_id, hook, HookStage::AfterTool, &decision)?);
            match decision {
                Decision::Note { note } => notes.push(note),
                // after the call, a hook that fails is a note: the call has run
                Decision::Deny { reason } => notes.push(reason),
                Decision::Allow | Decision::Rewrite { .. } => {}
            }
        }
        Ok((decided, notes))
    }

    fn hooks(&self, stage: HookStage, tool: &str) -> impl Iterator<Item = &Hook> {
        self.spec
            .hooks
            .iter()
            .filter(move |h| h.applies(stage, tool))
    }

    fn decided(
        &self,
        call_id: &str,
        hook: &Hook,
        stage: HookStage,
        decision: &Decision,
    ) -> Result<EventKind, Error> {
        Ok(EventKind::HookDecided {
            call_id: call_id.to_owned(),
            hook: hook.name.clone(),
            stage,
            decision: self.put_json(&decision.to_value(&hook.name))?,
        })
    }

    /// Run `hook` on `input` in the exec sandbox; its decision (a hook that cannot run
    /// denies).
    async fn run_hook(&self, hook: &Hook, stage: HookStage, input: &Value) -> Decision {
        let started = std::time::Instant::now();
        let ran = match Workspace::new(&self.spec.workspace) {
            Ok(workspace) => {
                let exec = Exec::new(self.spec.exec.clone().unwrap_or_default(), workspace);
                let argv = vec!["/bin/sh".into(), "-c".into(), hook.command.clone()];
                let stdin = serde_json::to_vec(input).unwrap_or_default();
                exec.run(
                    argv,
                    hook.dir.clone(),
                    std::slice::from_ref(&hook.dir),
                    stdin,
                    hook.timeout_secs,
                )
                .await
                .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        let decision = match ran {
            Ok(finished) => hooks::decision(
                hook,
                stage,
                &Ran {
                    exit_code: finished.exit_code,
                    timed_out: finished.timed_out,
                    stdout: &finished.stdout.shown,
                    stderr: &finished.stderr.shown,
                },
            ),
            Err(why) => Decision::Deny {
                reason: format!("hook `{}` could not run: {why}", hook.name),
            },
        };
        let said = match &decision {
            Decision::Allow => "allow",
            Decision::Deny { .. } => "deny",
            Decision::Rewrite { .. } => "rewrite",
            Decision::Note { .. } => "note",
        };
        tracing::info!(hook = %hook.name, ms = started.elapsed().as_millis(), decision = said, "hook decided");
        decision
    }
}
